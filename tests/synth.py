"""The synthetic voices under their old test-module name, for test files still importing `synth`
(they live in `speakerverify.testing`, which benchmarks import too)."""

from speakerverify.testing import SynthSpeaker, make_voxceleb_corpus, random_speaker, speech_like

__all__ = ["SynthSpeaker", "make_voxceleb_corpus", "random_speaker", "speech_like"]
