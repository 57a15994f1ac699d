"""Plans, group-aware selection, state-dict slicing and export."""
