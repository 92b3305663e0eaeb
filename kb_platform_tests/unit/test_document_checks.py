import subprocess
import sys


def test_loading_the_code_location_prints_no_preview_warning() -> None:
    # Partitioned asset checks are a Dagster preview feature; its warning belongs in the debug
    # log, not in the terminal of every command that loads the definitions.
    loaded = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import kb_platform.definitions"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "PreviewWarning" not in loaded.stderr, loaded.stderr
