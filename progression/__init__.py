"""progression: forecast radiographic joint damage in rheumatoid arthritis."""
