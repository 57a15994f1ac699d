"""The stages of the Minitron recipe as library entry functions: the one route through the code.

One module per stage (`calibrate`, `prune`, `search`, `distill`, `evaluate`, ...). Each holds

- the stage's **settings**: one dataclass, the only place its options and their defaults are
  defined. A command's flags are these fields (`kd_steps` is `--kd-steps`), a recipe's section is
  this dataclass, and `import hybridprune as hp` takes the same keywords;
- the stage's **entry function**, `run(settings, ...)`: everything between the parsed options and the
  written output (loading with the one load path, score reuse, fingerprint checks, resume,
  calibration on demand). `hybridprune <stage> ...` is a one-stage run of this function; the recipe
  runs the same function, so the two cannot drift.

Command functions parse and print; they hold no orchestration. Module level stays torch-free (the
command line imports the settings before anything heavy); the entry functions import their work
lazily.
"""
