"""The CyxWiz wire contract: our ``.proto`` files (package ``cyxwiz.protocol``), the
code generated from them by ``python -m protos.generate``, and pure converters.

Import the generated modules by full name (``from protos import job_pb2``) and the
converters from ``protos.convert``; this package imports nothing on its own.
"""
