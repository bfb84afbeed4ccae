import pytest

from stages import share


def test_outside_a_dvc_project_it_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        share.main([])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path}: not a DVC project (") and err.endswith("run this from the repository root")
