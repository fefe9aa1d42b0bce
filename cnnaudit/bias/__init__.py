"""Who does the model fail? Subgroup metrics with honest statistics, the data audit, image properties."""
