"""folder_files: layouts, pairing by stem (suffixes, sub-folders), the held-out split, errors."""

import hashlib
import os

import pytest

from advseg_jax.configs import folder as folder_config
from advseg_jax.data import folder_files
from advseg_jax.data.folder_files import FolderError


def _touch(path, content=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


def _folder(**keys):
    folder = folder_config.get_config().folder
    folder.update(keys)
    return folder


def test_pairs_by_stem_with_suffix_and_sub_folders(tmp_path):
    for stem in ("a", "city/b", "city/deep/c"):
        _touch(tmp_path / "img" / f"{stem}.jpg")
        _touch(tmp_path / "ann" / f"{stem}_mask.png")
    _touch(tmp_path / "ann" / "city" / "b_color.png")  # Not a mask: lacks the suffix.
    _touch(tmp_path / "img" / "notes.txt")  # Not an image.
    splits = folder_files.split_pairs(_folder(
        train_images=str(tmp_path / "img"), train_masks=str(tmp_path / "ann"),
        eval_images=str(tmp_path / "img"), eval_masks=str(tmp_path / "ann"),
        mask_suffix="_mask"))
    assert [p.stem for p in splits["train"]] == ["a", "city/b", "city/deep/c"]
    pair = splits["train"][2]
    assert pair.image == str(tmp_path / "img" / "city" / "deep" / "c.jpg")
    assert pair.mask == str(tmp_path / "ann" / "city" / "deep" / "c_mask.png")


def test_every_image_extension_pairs_case_insensitively(tmp_path):
    for i, extension in enumerate((".jpg", ".JPEG", ".png", ".bmp", ".tif", ".tiff")):
        _touch(tmp_path / "img" / f"x{i}{extension}")
        _touch(tmp_path / "ann" / f"x{i}{('.png', '.bmp', '.TIF')[i % 3]}")
    pairs = folder_files.pair_files(
        folder_files.list_files(str(tmp_path / "img"), folder_files.IMAGE_EXTENSIONS, "i"),
        folder_files.list_files(str(tmp_path / "ann"), folder_files.MASK_EXTENSIONS, "m"),
        "i", "m", "")
    assert [p.stem for p in pairs] == [f"x{i}" for i in range(6)]


def test_unpaired_files_are_listed_with_counts_both_ways(tmp_path):
    for i in range(8):
        _touch(tmp_path / "img" / f"{i}.jpg")
    for i in range(1, 10):
        _touch(tmp_path / "ann" / f"{i}.png")
    with pytest.raises(FolderError) as error:
        folder_files.split_pairs(_folder(train_images=str(tmp_path / "img"),
                                         train_masks=str(tmp_path / "ann")))
    message = str(error.value)
    assert "1 image(s) of config.folder.train_images have no mask" in message
    assert str(tmp_path / "img" / "0.jpg") in message
    assert "2 mask(s) of config.folder.train_masks have no image" in message
    assert str(tmp_path / "ann" / "8.png") in message and "9.png" in message
    assert "config.folder.mask_suffix" in message


def test_many_unpaired_files_are_counted_not_all_listed(tmp_path):
    _touch(tmp_path / "ann" / "z.png")
    for i in range(20):
        _touch(tmp_path / "img" / f"{i:02d}.jpg")
    with pytest.raises(FolderError, match=r"20 image\(s\).*\(15 more\)"):
        folder_files.split_pairs(_folder(train_images=str(tmp_path / "img"),
                                         train_masks=str(tmp_path / "ann")))


def test_empty_or_missing_directory_is_named(tmp_path):
    (tmp_path / "img").mkdir()
    _touch(tmp_path / "ann" / "a.png")
    with pytest.raises(FolderError, match=r"config.folder.train_images='.*img' has no files"):
        folder_files.split_pairs(_folder(train_images=str(tmp_path / "img"),
                                         train_masks=str(tmp_path / "ann")))
    with pytest.raises(FolderError, match=r"config.folder.train_masks='.*nowhere' is not a dir"):
        folder_files.split_pairs(_folder(train_images=str(tmp_path / "ann"),
                                         train_masks=str(tmp_path / "nowhere")))
    with pytest.raises(FolderError, match="Set config.folder.train_images"):
        folder_files.split_pairs(_folder())


def test_two_images_of_one_stem_are_refused(tmp_path):
    _touch(tmp_path / "img" / "a.jpg")
    _touch(tmp_path / "img" / "a.png")
    with pytest.raises(FolderError, match=r"a.jpg and .*a.png have the same stem 'a'"):
        folder_files.list_files(str(tmp_path / "img"), folder_files.IMAGE_EXTENSIONS,
                                "train_images")


def test_held_out_pairs_follow_the_documented_hash_rule(tmp_path):
    stems = [f"img_{i:03d}" for i in range(50)]
    pairs = [folder_files.Pair(s, f"{s}.jpg", f"{s}.png") for s in stems]
    train, held = folder_files.hold_out(pairs, 0.1)
    ranked = sorted(stems, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    assert [p.stem for p in held] == sorted(ranked[:5])
    assert len(train) == 45 and not {p.stem for p in train} & {p.stem for p in held}
    # The order of the input does not matter, and a new file moves no other across the split.
    _, held_reversed = folder_files.hold_out(pairs[::-1], 0.1)
    assert {p.stem for p in held_reversed} == {p.stem for p in held}
    more = pairs + [folder_files.Pair("new", "new.jpg", "new.png")]
    _, held_more = folder_files.hold_out(more, 0.1)
    assert {p.stem for p in held_more} <= {p.stem for p in held} | {"new"}
    with pytest.raises(FolderError, match="eval_fraction=1.5"):
        folder_files.hold_out(pairs, 1.5)


def test_eval_fraction_is_held_out_of_training_pairs(tmp_path):
    for i in range(20):
        _touch(tmp_path / "img" / f"{i}.jpg")
        _touch(tmp_path / "ann" / f"{i}.png")
    splits = folder_files.split_pairs(_folder(train_images=str(tmp_path / "img"),
                                              train_masks=str(tmp_path / "ann"),
                                              eval_fraction=0.25))
    assert len(splits["validation"]) == 5 and len(splits["train"]) == 15


def test_voc_layout_uses_its_lists_and_skips_detection_only_images(tmp_path):
    for stem in ("2007_01", "2007_02", "2007_03", "2008_04"):
        _touch(tmp_path / "JPEGImages" / f"{stem}.jpg")
        _touch(tmp_path / "SegmentationClass" / f"{stem}.png")
    _touch(tmp_path / "JPEGImages" / "2009_detection_only.jpg")
    lists = tmp_path / "ImageSets" / "Segmentation"
    _touch(lists / "train.txt", b"2007_01\n2007_03\n2008_04\n")
    _touch(lists / "val.txt", b"2007_02\n")
    splits = folder_files.split_pairs(_folder(root=str(tmp_path)))
    assert [p.stem for p in splits["train"]] == ["2007_01", "2007_03", "2008_04"]
    assert [p.stem for p in splits["validation"]] == ["2007_02"]
    _touch(lists / "val.txt", b"2007_02\n2010_missing\n")
    with pytest.raises(FolderError, match=r"val.txt names 1 id\(s\) with no image and mask.*"
                                          r"2010_missing"):
        folder_files.split_pairs(_folder(root=str(tmp_path)))


@pytest.mark.parametrize("images, masks, train, val", [
    ("images", "masks", "train", "val"),
    ("images", "annotations", "training", "validation"),
])
def test_images_masks_layouts_with_split_sub_folders(tmp_path, images, masks, train, val):
    for split, stems in ((train, ("a", "b")), (val, ("c",))):
        for stem in stems:
            _touch(tmp_path / images / split / f"{stem}.jpg")
            _touch(tmp_path / masks / split / f"{stem}.png")
    splits = folder_files.split_pairs(_folder(root=str(tmp_path)))
    assert [p.stem for p in splits["train"]] == ["a", "b"]
    assert [p.stem for p in splits["validation"]] == ["c"]


def test_unknown_root_layout_lists_what_it_found(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(FolderError, match=r"matches no known layout.*\['pictures'\]"):
        folder_files.split_pairs(_folder(root=str(tmp_path)))


def test_fingerprint_changes_with_any_file_change(tmp_path):
    _touch(tmp_path / "a.png", b"1234")
    files = [str(tmp_path / "a.png")]
    first = folder_files.fingerprint(files, {"void": 255})
    assert folder_files.fingerprint(files, {"void": 255}) == first
    assert folder_files.fingerprint(files, {"void": 0}) != first
    _touch(tmp_path / "a.png", b"12345")
    assert folder_files.fingerprint(files, {"void": 255}) != first
