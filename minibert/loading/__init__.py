"""Loading a model directory: config, checkpoint readers (safetensors, torch files without torch), the
tokenizer, sentence-transformers files, conversion.
"""
