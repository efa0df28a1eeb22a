"""Datasets: loading the sources, preparing the splits, image grids."""
