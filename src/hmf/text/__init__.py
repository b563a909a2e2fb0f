"""Class descriptions (prompts) and their text embeddings.

``bank`` (descriptions shipped with the package), ``llm`` (descriptions from an
OpenAI-compatible endpoint), ``prompts`` (the cached prompts file and its provenance),
``encoders`` (frozen text encoders) and ``embeddings`` (the text-bank file).
"""
