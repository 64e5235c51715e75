"""On Cloud N data: chips on disk -> arrays, datasets, folds, sample data, validation."""
