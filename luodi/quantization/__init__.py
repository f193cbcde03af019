"""Weight quantization of an exported graph, per target: the methods each target offers and their checks."""
