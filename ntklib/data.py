"""Datasets and the binary backdoor task.

- :func:`load_digits`: scikit-learn's 8x8 digits (embedded, no download) as float
  images in [0, 1] of shape (n, 8, 8, 1).
- :func:`load_cifar10`: CIFAR-10 from the standard ``cifar-10-python.tar.gz``
  layout, found in ``data/`` then in ``$NTKLIB_DATA_DIR``, extracted once into
  ``data/`` and checked file by file against the md5 values torchvision uses.
  Images are float32 in [0, 1], NHWC (n, 32, 32, 3). Where the archive is not at
  hand, a subset written by :func:`export_cifar10_subset` (``make cifar-pair``:
  the classes a study needs, both splits, uint8, in the archive's order, 37 MB for
  two classes instead of 163 MB) serves the same images to the same code.
- :func:`make_task`: the sets of docs/design.md, section 2 for a (source, target)
  pair: clean training set ``d``, the poison candidate pool (triggered copies of
  the source images of ``d``, labelled +1), the held-out evaluation sets ``t``
  and ``a`` (taken from *training* images: the attacker has no test data), and
  the real test split for reporting.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tarfile
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import triggers as _triggers
from . import validation as _val

__all__ = [
    "load_digits", "load_cifar10", "load_dataset", "download_cifar10", "find_cifar10",
    "verify_cifar10", "make_task", "pool_size", "BackdoorTask", "CIFAR10_CLASSES", "DATASETS",
    "default_trigger", "project_data_dir", "export_cifar10_subset", "find_cifar10_subset", "CIFAR10_SUBSET",
    "class_index",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # the official cifar-10-python.tar.gz
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
DATASETS = ("digits", "cifar10")
CIFAR10_SUBSET = "cifar-10-subset.npz"  # export_cifar10_subset's file (with a .json beside it)

# Digits has no official test split: a fixed, seed-independent 25% per class.
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 20230501


def project_data_dir() -> Path:
    """The repository's ``data/`` folder (next to the ``ntklib`` package)."""
    return Path(__file__).resolve().parent.parent / "data"


# --------------------------------------------------------------------------- digits
def load_digits():
    """scikit-learn's digits as ((n, 8, 8, 1) float32 in [0, 1], int labels)."""
    from sklearn.datasets import load_digits as _sk_digits

    bunch = _sk_digits()
    X = (bunch.images / 16.0).astype(np.float32)[..., None]
    return X, bunch.target.astype(np.int64)


def _digits_split():
    X, y = load_digits()
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test = np.zeros(len(y), bool)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: int(round(DIGITS_TEST_FRACTION * len(idx)))]] = True
    return X[~test], y[~test], X[test], y[test]


# --------------------------------------------------------------------------- CIFAR-10
def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_cifar10(folder) -> Path:
    """Check every batch file in an extracted ``cifar-10-batches-py`` folder.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the
    file, the expected and the found md5 for a corrupt one.
    """
    folder = Path(folder)
    for name, expected in CIFAR10_MD5.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"CIFAR-10 file {path} is missing; delete the folder {folder}: ntklib extracts it again "
                f"from {CIFAR10_ARCHIVE} (after checking the archive) at the next load")
        found = _md5(path)
        if found != expected:
            raise ValueError(
                f"CIFAR-10 file {path} is corrupt: md5 {found}, expected {expected}. Delete the folder "
                f"{folder}: ntklib extracts it again from {CIFAR10_ARCHIVE} at the next load, after checking "
                f"the archive itself (a damaged archive is then named; get a fresh copy from {CIFAR10_URL})")
    return folder


def _search_dirs(data_dir=None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir)]
    dirs = [project_data_dir()]
    env = os.environ.get("NTKLIB_DATA_DIR")
    if env:
        dirs.append(Path(env))
    return dirs


def find_cifar10(data_dir=None) -> Path:
    """Locate (and if needed extract) CIFAR-10; return the verified batch folder.

    Looks in ``data_dir`` if given, else in the project's ``data/`` and then in
    ``$NTKLIB_DATA_DIR``, for an extracted ``cifar-10-batches-py/`` or the archive
    ``cifar-10-python.tar.gz``. An archive is extracted once into the project's
    ``data/`` (or next to the archive when ``data/`` is not writable).
    """
    looked = []
    for d in _search_dirs(data_dir):
        folder, archive = d / CIFAR10_FOLDER, d / CIFAR10_ARCHIVE
        looked.append(str(d))
        if folder.is_dir():
            return verify_cifar10(folder)
        if archive.is_file():
            target = project_data_dir() if data_dir is None else Path(data_dir)
            if not os.access(target, os.W_OK):
                target = archive.parent
            if (target / CIFAR10_FOLDER).is_dir():
                return verify_cifar10(target / CIFAR10_FOLDER)
            return verify_cifar10(_extract(archive, target))
    hint = "" if os.environ.get("NTKLIB_DATA_DIR") else " ($NTKLIB_DATA_DIR is not set)"
    raise FileNotFoundError(
        f"CIFAR-10 not found: looked for {CIFAR10_FOLDER}/ or {CIFAR10_ARCHIVE} in "
        f"{', '.join(looked)}{hint}. Put {CIFAR10_ARCHIVE} (from {CIFAR10_URL}) in "
        f"{project_data_dir()} or point NTKLIB_DATA_DIR at its folder; with internet, "
        "ntklib.data.download_cifar10() fetches it.")


def _damaged(archive: Path, why: str) -> str:
    md5 = _md5(archive)
    official = "the official archive's" if md5 == CIFAR10_ARCHIVE_MD5 else \
        f"md5 {md5}, the official archive's is {CIFAR10_ARCHIVE_MD5}"
    return (f"the CIFAR-10 archive {archive} is damaged: {why}; {official}. Nothing was extracted (the partial "
            f"extraction was removed). Replace the archive with a fresh copy from {CIFAR10_URL}")


def _extract(archive: Path, target: Path) -> Path:
    """Extract into ``<target>/cifar-10-batches-py.partial``, check every batch's md5, then rename:
    a failed or interrupted extraction never leaves a folder that looks complete, and a damaged
    archive is blamed (not the folder). The archive's own md5 is not required to be the official
    one (repacked archives with the same batches are fine); it is reported when the batches fail."""
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / (CIFAR10_FOLDER + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and m.name.startswith(CIFAR10_FOLDER + "/")
                       and ".." not in m.name]
            for m in members:
                m.name = m.name[len(CIFAR10_FOLDER) + 1:]
                tar.extract(m, tmp)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(_damaged(archive, f"it cannot be extracted ({type(e).__name__}: {e})")) from e
    try:
        verify_cifar10(tmp)
    except (OSError, ValueError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        what = str(e).split(";")[0].split(". Delete")[0].replace(str(tmp), CIFAR10_FOLDER)
        raise ValueError(_damaged(archive, f"its contents fail their check ({what})")) from e
    final = target / CIFAR10_FOLDER
    tmp.rename(final)
    return final


def download_cifar10(dest=None) -> Path:
    """Download ``cifar-10-python.tar.gz`` from the official page into ``dest``
    (default: the project's ``data/``). Needs internet; never called by tests."""
    dest = Path(dest) if dest is not None else project_data_dir()
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / CIFAR10_ARCHIVE
    if not path.exists():
        tmp = path.with_suffix(".part")
        urllib.request.urlretrieve(CIFAR10_URL, tmp)
        tmp.rename(path)
    return path


def _read_batch(path: Path):
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        return d[b"data"], np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:  # verified by md5 before, so this means the file changed since
        raise _val.file_error(path, "a CIFAR-10 batch", e, f"Delete the folder {path.parent}: ntklib extracts "
                              f"it again from {CIFAR10_ARCHIVE}") from e


def _subset_arrays(path: Path) -> tuple[dict, dict]:
    """The arrays and the provenance of a subset file, checked against the provenance's sha256."""
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} has no provenance file {meta_path.name} beside it; write both again with "
                                "`make cifar-pair` (ntklib.data.export_cifar10_subset)")
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("X_train", "y_train", "X_test", "y_test")}
    except Exception as e:
        raise _val.file_error(path, "a CIFAR-10 subset", e, "Write it again with `make cifar-pair`") from e
    for k, a in arrays.items():
        if hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() != meta.get("sha256", {}).get(k):
            raise ValueError(f"{path}: the array {k} does not match the sha256 in {meta_path.name}: the file is "
                             "damaged or was changed. Write it again with `make cifar-pair`")
    return arrays, meta


def find_cifar10_subset(classes, data_dir=None) -> Path | None:
    """The subset file (:data:`CIFAR10_SUBSET`) in the data folders that holds every one of
    ``classes`` (all ten when None), or None. A subset that lacks some of them is named in the
    error of :func:`load_cifar10`, not used."""
    want = set(range(10)) if classes is None else {class_index("cifar10", c) for c in _class_list(classes)}
    for d in _search_dirs(data_dir):
        meta = d / Path(CIFAR10_SUBSET).with_suffix(".json")
        if (d / CIFAR10_SUBSET).is_file() and meta.is_file():
            try:
                held = set(json.loads(meta.read_text())["classes"])
            except (ValueError, KeyError, TypeError):
                held = set()
            if want <= held:
                return d / CIFAR10_SUBSET
    return None


def export_cifar10_subset(classes=(9, 4), out=None, data_dir=None) -> Path:
    """Write the images of ``classes`` (ints or names; default truck and deer, the paper's pair) from
    the CIFAR-10 archive as one compressed ``.npz`` of uint8 (X_train (n, 32, 32, 3), y_train (n,),
    X_test, y_test; the archive's order, so :func:`make_task` draws the same images from it) and a
    JSON beside it: the classes, the counts, the md5 of every batch of the archive it came from
    (:data:`CIFAR10_MD5`) and the sha256 of every array (checked when it is read). ``out``: the
    ``.npz`` path (default ``data/cifar-10-subset.npz``). Two classes: 12,000 images, 37 MB raw.
    Returns the path of the ``.npz``."""
    keep = [class_index("cifar10", c) for c in _class_list(classes)]
    out = _val.check_path(out if out is not None else project_data_dir() / CIFAR10_SUBSET, "out",
                          suffixes=(".npz",), writable=True)
    folder = find_cifar10(data_dir)
    arrays = {}
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        xs, ys = [], []
        for name in names:
            x, y = _read_batch(folder / name)
            m = np.isin(y, keep)
            xs.append(x[m])
            ys.append(y[m])
        arrays[f"X_{split}"] = np.concatenate(xs).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.uint8)
        arrays[f"y_{split}"] = np.concatenate(ys).astype(np.uint8)
    meta = dict(classes=sorted(keep), class_names=[CIFAR10_CLASSES[c] for c in sorted(keep)],
                counts={k: int(len(v)) for k, v in arrays.items() if k.startswith("y_")},
                batch_md5=CIFAR10_MD5, source=CIFAR10_ARCHIVE, layout="uint8 NHWC, the archive's order",
                sha256={k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in arrays.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".part.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out)
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return out


def load_cifar10(classes=None, data_dir=None):
    """CIFAR-10 as (X_train, y_train, X_test, y_test).

    Images are float32 in [0, 1], NHWC (n, 32, 32, 3); labels are ints 0-9.
    ``classes`` (ints or names) keeps only those classes before conversion, which
    saves memory (all of CIFAR-10 in float32 is 737 MB). Without the archive, a subset
    file of :func:`export_cifar10_subset` that holds the classes gives the same arrays.
    """
    keep = None if classes is None else [class_index("cifar10", c) for c in _class_list(classes)]
    try:
        folder = find_cifar10(data_dir)
    except FileNotFoundError as e:
        subset = find_cifar10_subset(keep, data_dir)
        if subset is None:
            raise FileNotFoundError(f"{e} A subset file {CIFAR10_SUBSET} (`make cifar-pair`) holding classes "
                                    f"{keep if keep is not None else 'all'} serves too.") from None
        arrays, _ = _subset_arrays(subset)
        out = []
        for split in ("train", "test"):
            x, y = arrays[f"X_{split}"], arrays[f"y_{split}"].astype(np.int64)
            m = np.ones(len(y), bool) if keep is None else np.isin(y, keep)
            out += [x[m].astype(np.float32) / 255.0, y[m]]
        return tuple(out)

    def load(names):
        xs, ys = [], []
        for name in names:
            x, y = _read_batch(folder / name)
            if keep is not None:
                m = np.isin(y, keep)
                x, y = x[m], y[m]
            xs.append(x)
            ys.append(y)
        x = np.concatenate(xs).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return (x.astype(np.float32) / 255.0), np.concatenate(ys)

    Xtr, ytr = load([f"data_batch_{i}" for i in range(1, 6)])
    Xte, yte = load(["test_batch"])
    return Xtr, ytr, Xte, yte


def load_dataset(name: str, classes=None, data_dir=None):
    """(X_train, y_train, X_test, y_test) for ``"digits"`` or ``"cifar10"``.

    Digits has no official test split; a fixed 25% of each class (independent of
    any task seed) serves as one.
    """
    _val.check_choice(name, "name", DATASETS)
    if name == "digits":
        Xtr, ytr, Xte, yte = _digits_split()
        if classes is not None:
            keep = [class_index("digits", c) for c in _class_list(classes)]
            mtr, mte = np.isin(ytr, keep), np.isin(yte, keep)
            Xtr, ytr, Xte, yte = Xtr[mtr], ytr[mtr], Xte[mte], yte[mte]
        return Xtr, ytr, Xte, yte
    return load_cifar10(classes=classes, data_dir=data_dir)


def _class_list(classes) -> list:
    if isinstance(classes, (str, int, np.integer)):
        return [classes]
    classes = list(classes)
    if not classes:
        raise ValueError("classes=[] is invalid: give at least one class (or None for all)")
    return classes


def class_index(dataset: str, c) -> int:
    """The class number 0-9 of ``c`` in ``dataset`` (an integer, or a CIFAR-10 class name such as
    ``"truck"``); ``ValueError`` naming the valid classes otherwise."""
    if dataset == "cifar10" and isinstance(c, str):
        if c not in CIFAR10_CLASSES:
            raise ValueError(f"unknown CIFAR-10 class {c!r}; classes are {CIFAR10_CLASSES}")
        return CIFAR10_CLASSES.index(c)
    if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or not 0 <= c <= 9:
        names = " or a name from " + str(CIFAR10_CLASSES) if dataset == "cifar10" else ""
        raise ValueError(f"unknown {dataset} class {c!r}; classes are the integers 0-9{names}")
    return int(c)


# --------------------------------------------------------------------------- the task
def default_trigger(dataset: str, name: str = "periodic", amplitude: float | None = None) -> _triggers.Trigger:
    """The reference triggers, adapted to the dataset's image size.

    CIFAR-10 (32x32): periodic amplitude 6/255 with 8 periods (4 pixels a period);
    digits (8x8): 2 periods (again 4 pixels a period) and amplitude 0.15, since
    digits are far coarser. ``amplitude`` overrides the periodic trigger's.
    Patch: 3x3 checkerboard (CIFAR-10), 2x2 (digits), at a random location per image.
    """
    _val.check_choice(dataset, "dataset", DATASETS)
    if not isinstance(name, str):
        raise TypeError(f"name={_val.describe(name)} is invalid: must be 'periodic' or 'patch'")
    _val.check_choice(name, "name", ("periodic", "patch"))
    if amplitude is not None and name != "periodic":
        raise ValueError(f"amplitude={amplitude!r}: only the periodic trigger has an amplitude")
    amplitude = _val.check_float(amplitude, "amplitude", min=0, max=1, include_min=False, allow_none=True)
    if name == "periodic":
        kw = dict(amplitude=6 / 255, periods=8) if dataset == "cifar10" else dict(amplitude=0.15, periods=2)
        if amplitude is not None:
            kw["amplitude"] = float(amplitude)
        return _triggers.make_trigger("periodic", **kw)
    if name == "patch":
        return _triggers.make_trigger("patch", size=3 if dataset == "cifar10" else 2)
    raise ValueError(f"unknown trigger {name!r}; choose 'periodic' or 'patch', or pass a Trigger")


@dataclass
class BackdoorTask:
    """The sets of a binary backdoor task (labels: target +1, source -1).

    Images are NHWC float in [0, 1].

    Attributes:
        X_d, y_d:       clean training set d (victim's data)
        X_cand:         poison candidates: triggered copies of d's source images,
                        all labelled +1 (``y_cand``); ``cand_index`` indexes X_d
        X_t, y_t:       held-out clean evaluation set t (from training images)
        X_a:            attack set a: held-out source training images + trigger,
                        desired label +1
        X_test, y_test: the real clean test split (both classes), for reporting
        X_test_trig:    triggered source-class test images, for reporting ASR
        trigger:        the :class:`~ntklib.triggers.Trigger` used
        spec:           JSON-able description of how the task was built
        X_spare, y_spare: clean training-split images disjoint from d, t and a (empty unless
                        ``n_spare_per_class`` was asked for): a defender's clean set
    """

    X_d: np.ndarray
    y_d: np.ndarray
    X_cand: np.ndarray
    cand_index: np.ndarray
    X_t: np.ndarray
    y_t: np.ndarray
    X_a: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_test_trig: np.ndarray
    trigger: _triggers.Trigger
    spec: dict = field(default_factory=dict)
    X_spare: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, 1), np.float32))
    y_spare: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def y_cand(self) -> np.ndarray:
        return np.ones(len(self.X_cand))

    def summary(self) -> str:
        return (f"{self.spec.get('dataset')} {self.spec.get('source')} -> {self.spec.get('target')}: "
                f"d={len(self.X_d)}, candidates={len(self.X_cand)}, t={len(self.X_t)}, "
                f"a={len(self.X_a)}, test={len(self.X_test)} (triggered source: {len(self.X_test_trig)})")


def _take(idx: np.ndarray, n, what: str, cls, available: int):
    if n is None:
        return idx
    n = _val.check_int(n, what, min=1)
    if n > available:
        raise ValueError(f"{what} = {n} for class {cls}, but only {available} images are "
                         f"available; choose a size between 1 and {available}")
    return idx[:n]


def pool_size(dataset: str = "digits", source=7, n_train_per_class=None, n_eval_per_class: int = 30,
              n_pool=None, **_other) -> int:
    """The size of the candidate pool :func:`make_task` would build with these sizes (the triggered
    source images of d: ``n_pool``, or all of d's ``n_train_per_class`` source images, by default
    every training image of the class after the ``n_eval_per_class`` held out), computed without
    building the task: the runner checks every budget against it before anything runs. Other
    make_task arguments are accepted and ignored. Cost: digits, one count of the embedded labels;
    CIFAR-10, none (5000 training images per class)."""
    if dataset == "digits":
        n_class = int(np.sum(_digits_split()[1] == class_index("digits", source)))
    else:
        _val.check_choice(dataset, "dataset", DATASETS)
        class_index(dataset, source)
        n_class = 5000  # CIFAR-10's training split, every class
    n_src = n_class - int(n_eval_per_class) if n_train_per_class is None else int(n_train_per_class)
    return int(n_pool) if n_pool is not None else n_src


def make_task(dataset: str = "digits", source=7, target=1, trigger="periodic",
              n_train_per_class=None, n_eval_per_class=30, n_test_per_class=None,
              n_pool=None, seed: int = 0, data_dir=None, n_spare_per_class: int = 0) -> BackdoorTask:
    """Build the sets of a backdoor task for a (source, target) class pair.

    The training images of the two classes are shuffled with ``seed``; per class
    the first ``n_eval_per_class`` are held out as t (and, for the source class,
    triggered as a), the next ``n_train_per_class`` (default: all the rest) form
    d. The candidate pool holds triggered copies of d's source images (the first
    ``n_pool`` of them, default all). Test images are the dataset's test split
    (the first ``n_test_per_class`` per class after shuffling, default all).
    Same arguments, same split. ``n_spare_per_class`` more images per class after d form the
    clean spare set (``X_spare``, a defender's clean images; d must then be sized).

    ``trigger`` is ``"periodic"``, ``"patch"`` (the dataset's defaults from
    :func:`default_trigger`) or a :class:`~ntklib.triggers.Trigger`.
    """
    _val.check_choice(dataset, "dataset", DATASETS)
    seed = _val.check_seed(seed)
    for what, n in (("n_train_per_class", n_train_per_class), ("n_eval_per_class", n_eval_per_class),
                    ("n_test_per_class", n_test_per_class), ("n_pool", n_pool)):
        _val.check_int(n, what, min=1, allow_none=True, hint="None takes all available images")
    if n_eval_per_class is None:
        raise ValueError("n_eval_per_class=None is invalid: the held-out sets t and a need a size (default 30)")
    n_spare_per_class = _val.check_int(n_spare_per_class, "n_spare_per_class", min=0)
    if n_spare_per_class and n_train_per_class is None:
        raise ValueError("n_spare_per_class needs n_train_per_class: with n_train_per_class=None d takes every "
                         "remaining image and none is left spare")
    if data_dir is not None:
        data_dir = _val.check_path(data_dir, "data_dir", must_exist=True)
    s, t = class_index(dataset, source), class_index(dataset, target)
    if s == t:
        raise ValueError(f"source and target must differ (both are {source!r})")
    trig = default_trigger(dataset, trigger) if isinstance(trigger, str) else trigger
    if not isinstance(trig, _triggers.Trigger):
        raise TypeError("trigger must be a name or an ntklib.triggers.Trigger "
                        "(wrap a function with ntklib.triggers.custom)")
    Xtr, ytr, Xte, yte = load_dataset(dataset, classes=[s, t], data_dir=data_dir)
    rng = np.random.default_rng(seed)

    parts = {}
    for c in (s, t):
        idx = rng.permutation(np.flatnonzero(ytr == c))
        ev = _take(idx, n_eval_per_class, "n_eval_per_class", c, len(idx) - 1)
        rest = idx[len(ev):]
        tr = _take(rest, n_train_per_class, "n_train_per_class", c, len(rest))
        te_idx = rng.permutation(np.flatnonzero(yte == c))
        te = _take(te_idx, n_test_per_class, "n_test_per_class", c, len(te_idx))
        spare = rest[len(tr):]
        if n_spare_per_class > len(spare):
            raise ValueError(f"n_spare_per_class = {n_spare_per_class} for class {c}, but only {len(spare)} images "
                             "are left after t and d; choose fewer")
        parts[c] = (tr, ev, te, spare[:n_spare_per_class])

    def lab(y):
        return np.where(y == t, 1.0, -1.0)

    d_idx = np.concatenate([parts[t][0], parts[s][0]])
    t_idx = np.concatenate([parts[t][1], parts[s][1]])
    te_idx = np.concatenate([parts[t][2], parts[s][2]])
    sp_idx = np.concatenate([parts[t][3], parts[s][3]]).astype(int)
    X_d, y_d = Xtr[d_idx], lab(ytr[d_idx])
    src_in_d = np.flatnonzero(y_d < 0)
    n_src = len(src_in_d)
    if n_pool is not None and not 1 <= n_pool <= n_src:
        raise ValueError(f"n_pool = {n_pool}, but d holds only {n_src} source images to "
                         f"trigger; choose n_pool between 1 and {n_src}")
    cand_index = src_in_d[: n_pool or n_src]
    X_src_test = Xte[parts[s][2]]
    spec = dict(dataset=dataset, source=source, target=target, trigger=trig.spec,
                n_train_per_class=n_train_per_class, n_eval_per_class=n_eval_per_class,
                n_test_per_class=n_test_per_class, n_pool=n_pool, seed=seed)
    if n_spare_per_class:
        spec["n_spare_per_class"] = n_spare_per_class
    return BackdoorTask(
        X_d=X_d, y_d=y_d,
        X_cand=trig(X_d[cand_index]), cand_index=cand_index,
        X_t=Xtr[t_idx], y_t=lab(ytr[t_idx]),
        X_a=trig(Xtr[parts[s][1]]),
        X_test=Xte[te_idx], y_test=lab(yte[te_idx]),
        X_test_trig=trig(X_src_test),
        trigger=trig, spec=spec, X_spare=Xtr[sp_idx], y_spare=lab(ytr[sp_idx]))


def main(argv=None):
    """``python -m ntklib.data subset [--classes 9 4] [--out data/cifar-10-subset.npz]`` (``make cifar-pair``)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description="Write the CIFAR-10 images of a few classes as one compact file "
                                 "(export_cifar10_subset), to carry to a machine without the archive.")
    ap.add_argument("what", choices=["subset"])
    ap.add_argument("--classes", nargs="+", default=["9", "4"], help="class indices or names (default: 9 4)")
    ap.add_argument("--out", default=None, help=f"the .npz (default data/{CIFAR10_SUBSET})")
    args = ap.parse_args(argv)
    classes = [int(c) if c.isdigit() else c for c in args.classes]
    try:
        out = export_cifar10_subset(classes, args.out)
    except (FileNotFoundError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = json.loads(out.with_suffix(".json").read_text())
    print(f"{out} ({out.stat().st_size / 2**20:.1f} MiB): classes {meta['class_names']}, {meta['counts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
