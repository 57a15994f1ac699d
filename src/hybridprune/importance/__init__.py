"""Importance estimation: activation statistics from calibration data, and depth importance."""
