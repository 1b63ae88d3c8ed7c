import subprocess
import sys

from service.run import main


def test_unknown_option_is_exit_2_with_one_line(capsys):
    assert main(["--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments" in err


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "service.run", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("train", "generate", "validate", "tune", "sample-data"):
        assert name in out.stdout
