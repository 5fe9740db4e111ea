"""Figures: pure functions from result tables to matplotlib figures, in the papers' layouts."""
