"""streamyolo detect's own logic: which files it takes, where its defaults and outputs go (the runs: e2e)."""

from __future__ import annotations

from pathlib import Path

from detector.detect import annotated_name, find_inputs, parser, tyoy_folder


def test_inputs_are_found_in_subfolders_by_ending_in_any_case_images_apart_from_videos(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.PNG", "sub/c.jpeg", "clip.mp4", "old.avi", "notes.txt", "sub/deep/d.JPG"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = find_inputs(tmp_path, [])
    assert [p.relative_to(tmp_path).as_posix() for p in found.images] == [
        "a.PNG",
        "b.jpg",
        "sub/c.jpeg",
        "sub/deep/d.JPG",
    ]
    assert [p.name for p in found.videos] == ["clip.mp4"]  # .avi only when asked for, as Detector.py
    asked = find_inputs(tmp_path, ["avi", ".png"])
    assert ([p.name for p in asked.images], [p.name for p in asked.videos]) == (["a.PNG"], ["old.avi"])
    assert find_inputs(tmp_path / "b.jpg", []).images == [tmp_path / "b.jpg"]


def test_defaults_are_detector_pys_from_the_trainyourownyolo_folder_or_3_inference(tmp_path: Path) -> None:
    (tmp_path / "Data").mkdir()
    (tmp_path / "3_Inference").mkdir()
    assert tyoy_folder(tmp_path) == tyoy_folder(tmp_path / "3_Inference") == tmp_path
    (tmp_path / "Data" / "x").mkdir()
    assert tyoy_folder(tmp_path / "Data" / "x") == tmp_path / "Data" / "x"  # no Data in it or above: itself
    args = parser(tmp_path).parse_args([])
    assert args.input_path == tmp_path / "Data" / "Source_Images" / "Test_Images"
    assert args.output == tmp_path / "Data" / "Source_Images" / "Test_Image_Detection_Results"
    assert (args.score, args.postfix, args.no_save_img, args.is_tiny) == (0.25, "_catface", False, False)


def test_annotated_files_keep_their_subfolder_under_the_output_with_the_postfix(tmp_path: Path) -> None:
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    out = tmp_path / "out"
    assert annotated_name(out, root, root / "a" / "cat.jpg", "_catface") == out / "a" / "cat_catface.jpg"
    assert annotated_name(out, root / "x.png", root / "x.png", "_p") == out / "x_p.png"
    assert annotated_name(out, root, root / "clip.mpg", "_p", ".mp4") == out / "clip_p.mp4"


def test_detect_is_a_command_the_launcher_finds_registered_without_importing_it() -> None:
    from common.stack.launcher import subcommand
    from detector.detect import main

    assert subcommand("detect") is main
    assert subcommand("no-such-command") is None
    launcher = (Path(__file__).parents[2] / "common" / "stack" / "launcher.py").read_text()
    assert "import detector" not in launcher and "from detector" not in launcher  # common stays below detector
