"""pipeline.tools.export writes the examples the pipeline makes, with their metadata."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.tools import export
from pipeline.tools.synth import synthesize

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    synthesize(root, seed=3, clips_per_class=6, clip_s=1.5, long_s=12.0)
    return root


def test_export_writes_features_and_metadata(demo, tmp_path):
    out = tmp_path / "export"
    code = export.main(["--config", str(CONFIGS / "demo.yaml"), "--split", "all", "--out", str(out),
                        "--set", f"data.root={demo}", "--shard-size", "5"])
    assert code == 0
    listing = pd.read_csv(out / "examples.csv")
    assert len(listing) == 24 and set(listing["split"]) == {"train", "val", "test"}
    first = listing.iloc[0]
    with np.load(out / first["shard"]) as shard:
        assert shard["features"].shape[1:] == (151, 48)  # 1.5 s, hop 160 at 16 kHz; 48 mels
        assert shard["path"][first["index"]] == first["file"]
        assert shard["label"][first["index"]] == first["label"]
        assert np.isfinite(shard["features"]).all()
    assert (out / "bad_files.csv").exists()
