"""The one base class of every error the project raises for bad input or an unusable file.

The CLI turns exactly `SpeakerVerifyError` into `error: <first line of the message>` and exit
status 2; anything else is a bug and shows its traceback. Each module defines its own subclasses
(`AudioError` in `speakerverify.frontend.audio`, `ConfigError` in `speakerverify.config`, ...);
those that were `ValueError`s or `RuntimeError`s before keep that base too, so existing handlers
still match.
"""

from __future__ import annotations

__all__ = ["SpeakerVerifyError"]


class SpeakerVerifyError(Exception):
    """Input the library cannot use; the message is one line naming the file or setting."""
