"""scripts/mutmut_run.py: `make mutate` checks again only what has no verdict, and the survivors
not judged equivalent; killed mutants and judged equivalents keep theirs."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("mutmut_run", Path(__file__).resolve().parents[2] / "scripts" / "mutmut_run.py")
assert spec and spec.loader
mutmut_run = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutmut_run)


def test_only_unchecked_mutants_and_open_survivors_run_again() -> None:
    data = object()
    mutants = [(data, "m.x_f__mutmut_1", None), (data, "m.x_f__mutmut_2", 1), (data, "m.x_f__mutmut_3", 0),
               (data, "m.x_f__mutmut_4", 0), (data, "m.x_f__mutmut_5", 36), (data, "m.x_f__mutmut_6", 33)]
    left = mutmut_run.still_to_check(mutants, {"m.x_f__mutmut_4"})
    assert [name for _, name, _ in left] == ["m.x_f__mutmut_1", "m.x_f__mutmut_3", "m.x_f__mutmut_6"]
    assert all(entry[0] is data for entry in left)
    assert [name for _, name, _ in mutmut_run.still_to_check(mutants, set(), only_new=True)] == ["m.x_f__mutmut_1"]


def test_the_equivalents_file_is_read_by_name(tmp_path: Path) -> None:
    path = tmp_path / "equivalent.txt"
    path.write_text("# a comment line\nm.x_f__mutmut_4  # why it is equivalent\n\nm.x_g__mutmut_1#no space\n")
    assert mutmut_run.judged_equivalent(path) == {"m.x_f__mutmut_4", "m.x_g__mutmut_1"}
    assert mutmut_run.judged_equivalent(tmp_path / "absent.txt") == set()
    assert "fulfilment.state_machine.x_lease_held__mutmut_6" in mutmut_run.judged_equivalent()


def test_a_mutants_tests_run_fastest_first_and_unmeasured_ones_last() -> None:
    durations = {"t.py::slow": 40.0, "t.py::fast": 0.05, "t.py::mid": 1.0, "t.py::also_fast": 0.05}
    tests = {"t.py::slow", "t.py::new", "t.py::mid", "t.py::fast", "t.py::also_fast"}
    assert mutmut_run.fastest_first(tests, durations) == [
        "t.py::also_fast", "t.py::fast", "t.py::mid", "t.py::slow", "t.py::new"]
