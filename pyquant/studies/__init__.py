"""Reproducible studies (accuracy experiments) run with python -m pyquant.studies.<name>."""
