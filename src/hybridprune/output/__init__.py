"""Outputs: one appears whole or not at all, nothing of the user's is touched, and an interrupt stops
cleanly. `atomic` (refuse/overwrite rules, temporary siblings renamed into place), `errors` (the
message of a failed write), `cleanup` (undo a failed command's partial output), `signals`
(SIGINT/SIGTERM), `lock` (one writer per directory), `documents` (every JSON or YAML document read
back, checked).

Nothing is imported here: each command pulls in only the modules it uses (`import hybridprune` stays cheap).
"""
