"""Reading, writing and describing checkpoints: the one checked load path (`load`), Hub ids (`hub`),
safetensors shards tensor by tensor and their key names (`files`, `safetensors_io`, `keymap`), the
scores ↔ model fingerprint, the memory forecast, the config's style and the files carried to an output.

Nothing is imported here: each command pulls in only the modules it uses (`import hybridprune` stays cheap).
"""
