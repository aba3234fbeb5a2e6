"""Importers that turn labelled images into tile sets, and the synthetic frame generator."""
