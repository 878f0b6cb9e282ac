"""How much voiced speech an input needs, in seconds. Plain constants with no imports, so that the
CLI can show them as option defaults without importing numpy or torch."""

# Shorter speech makes a meaningless embedding (and may be shorter than the encoder's context):
# the floor for every input, also for each file of an enrollment (whose total needs more).
MIN_FILE_SPEECH_SECONDS = 0.5
# What an input needs by default to be embedded, scored, verified or identified, in the CLI and
# the API alike: one value, so that an input that embeds can also be verified.
MIN_SPEECH_SECONDS = 1.0
