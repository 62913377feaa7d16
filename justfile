# CyxWiz recipes. First time on a fresh clone:
#   python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/just demo

export PATH := justfile_directory() + "/.venv/bin:" + env_var('PATH')
export JAX_PLATFORMS := env_var_or_default('JAX_PLATFORMS', 'cpu')

default:
    @just --list

# install the project and its development tools into .venv
setup:
    test -x .venv/bin/python || python3 -m venv .venv
    .venv/bin/pip install -q -e '.[dev]'

# the whole test suite (real nats-server, gRPC servers and DuckDB files; ~minutes on 2 cores)
test *ARGS:
    python -m pytest -n 2 -q {{ARGS}}

# run every sh/python block of the README against a real stack (tests/test_readme.py)
readme:
    python -m pytest -p no:xdist -q tests/test_readme.py

# start NATS, central and one node; Ctrl-C stops them all
up *ARGS:
    cyxwiz up {{ARGS}}

# on a stack of its own (temporary home, free ports): train on builtin://digits, show metrics, hash and SQL
demo:
    cyxwiz demo

# regenerate protos/*_pb2*.py from protos/*.proto
protos:
    python -m protos.generate

# benchmarks (figures go to BENCHMARKS.md)
bench-backbone *ARGS:
    python bench/backbone_bench.py {{ARGS}}

bench-central *ARGS:
    python bench/central_bench.py {{ARGS}}

bench-trainer *ARGS:
    python bench/trainer_bench.py {{ARGS}}

bench-platform *ARGS:
    python bench/platform_bench.py {{ARGS}}
