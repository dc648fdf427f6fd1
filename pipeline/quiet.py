"""TensorFlow without its start-up noise: call `quiet_tensorflow()` first in every entry point,
before anything imports TensorFlow.

Importing TensorFlow 2.17 prints lines such as "Unable to register cuFFT factory: Attempting to
register factory for plugin cuFFT when one has already been registered" from its C++ side,
whatever TF_CPP_MIN_LOG_LEVEL says, on machines with or without a GPU. They look like failures
and are not. This hides exactly those lines (NOISE) and lets every other line through, so real
errors still show.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

# Lines TensorFlow prints at import that report nothing a user can act on.
NOISE = re.compile(
    r"Unable to register cu(FFT|DNN|BLAS) factory"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|oneDNN custom operations are on"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions:.*rebuild TensorFlow"
    r"|computation placer already registered"
)


def quiet_tensorflow() -> None:
    """Imports TensorFlow (and Keras) with the NOISE lines removed from its stderr output.

    Sets TF_CPP_MIN_LOG_LEVEL=2 (warnings and errors only) unless the user chose a level. A
    no-op once TensorFlow is imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401  (imports TensorFlow)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not NOISE.search(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
