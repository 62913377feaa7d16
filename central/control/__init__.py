"""The control loops: the command shell around the deciders (load, decide, append), the
scheduler, the dispatcher (and its worker process) and liveness."""
