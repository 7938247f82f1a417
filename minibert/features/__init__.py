"""Features computed from an encoding: pooling, words, long-text windows, attention statistics."""
