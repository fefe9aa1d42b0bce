"""Find the samples of a dataset folder and their labels and attributes.

Two layouts:
- ImageFolder: `DATA/<class>/<image>` (nested folders allowed), optional `DATA/metadata.csv` whose
  `path` column joins attribute columns onto the images.
- CSV-only: `DATA/metadata.csv` with `path` and `label` columns; the images can be anywhere in DATA.

Class order is the model's output order: `--classes FILE`, else `DATA/classes.txt`, else the sorted
folder names (the same order torchvision's ImageFolder uses, so models trained with it line up).

Multi-label data (any subset of the classes per image; `targets`, N x K of 0/1): `metadata.csv` with a
`labels` column (names separated by `|`, an empty cell = no label), or one 0/1 column per label named with
`--label-columns`; `--task multilabel` also reads a `label` column that way. Each label is then audited as
the binary decision it is (`label_view`), cnnaudit/multilabel/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..errors import AuditError

METADATA_FILE = "metadata.csv"
LABELS_COLUMN, LABEL_SEPARATOR = "labels", "|"  # multi-label: "effusion|nodule", empty = no label
NO_LABEL = "(none)"  # the label set of an image without any label, as label_name shows it
CLASSES_FILE = "classes.txt"
RESERVED_COLUMNS = ("sample_id", "path", "label", "label_name", "condition", "check", "prediction",
                    "prediction_name", "correct", "confidence", "loss")
# Columns the checks write into their rows beside the metadata. A metadata column of the same name would
# crash a join or be overwritten without a word (`severity`), so it is renamed META_PREFIX + name.
INTERNAL_COLUMNS = ("artifact", "aspect", "attack", "brightness", "clean_prediction", "consistent", "contrast",
                    "corruption", "dhash", "eps", "exif_orientation", "fgsm_correct", "fill", "flipped", "height",
                    "intervention", "margin", "min_eps", "norm", "pixel_hash", "severity", "sharpness", "toward_associated",
                    "width", "was_right", "target", "truth", "score", "probability", "decision")
META_PREFIX = "meta_"


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    table: pd.DataFrame  # one row per sample: sample_id, path, label, label_name, <attribute columns>
    attributes: list[str] = field(default_factory=list)
    layout: str = "imagefolder"
    excluded: list[dict] = field(default_factory=list)  # files found but not audited: [{path, reason}]
    renamed: dict[str, str] = field(default_factory=dict)  # metadata columns renamed away from internal names
    # multi-label data: (N, K) 0/1 by sample_id, K = len(classes); `label` is then the index of the image's label
    # set (what --limit stratifies by) and `label_name` the set as "a|b"
    targets: np.ndarray | None = None

    @property
    def task(self) -> str:
        return "multiclass" if self.targets is None else "multilabel"

    def label_view(self, k: int) -> "Dataset":
        """Label k of multi-label data as a two-class dataset: class 1 is the label, class 0 its absence, so
        every check audits the label's decision as it audits a binary classifier."""
        name = self.classes[k]
        y = self.targets[:, k].astype(np.int64)
        table = self.table.copy()
        table["label"] = y
        table["label_name"] = np.where(y == 1, name, absent(name))
        return Dataset(root=self.root, classes=[absent(name), name], table=table, attributes=list(self.attributes),
                       layout=self.layout, excluded=list(self.excluded), renamed=dict(self.renamed))


    def __len__(self) -> int:
        return len(self.table)

    def abspath(self, rel: str) -> Path:
        return self.root / rel

    def path_of(self, sample_id: int) -> str:
        """The relative path of a sample; sample ids are row positions of `table` (set in open_dataset)."""
        return self.table["path"].iat[int(sample_id)]


def absent(label: str) -> str:
    """The negative class of a label's binary view."""
    return f"not {label}"


def _read_classes(file: Path) -> list[str]:
    try:
        names = [line.strip() for line in file.read_text(encoding="utf-8-sig").splitlines()]  # BOM: Notepad
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"Cannot read class list {str(file)!r} ({exc}); give a UTF-8 file with one class "
                         "name per line.") from None
    names = [n for n in names if n]
    if not names:
        raise AuditError(f"Class list {str(file)!r} is empty; put one class name per line, in model output order.")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AuditError(f"Class list {str(file)!r} names {dupes[0]!r} twice; each class must appear once.")
    return names


def _safe_relpath(root: Path, raw: str, where: str) -> str:
    """A metadata path as a POSIX path relative to root; absolute or escaping paths are rejected."""
    text = str(raw).strip().replace("\\", "/")
    if not text:
        raise AuditError(f"{where}: the path is empty; every row needs the image path relative to the data folder.")
    rel = PurePosixPath(text)
    if rel.is_absolute() or (len(text) > 1 and text[1] == ":"):
        raise AuditError(f"{where}: path {text!r} is absolute; paths must be relative to the data folder.")
    resolved = (root / rel).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise AuditError(f"{where}: path {text!r} points outside the data folder {str(root)!r}; "
                         "only images inside it can be audited.")
    return resolved.relative_to(root.resolve()).as_posix()


def _read_metadata(root: Path) -> pd.DataFrame | None:
    file = root / METADATA_FILE
    if not file.exists():
        return None
    try:
        # pandas' default NA list would read a site called "NA" or a class called "None" as missing; only an
        # empty cell is. utf-8-sig: spreadsheet exports start with a BOM.
        meta = pd.read_csv(file, dtype={"path": str, "label": str, LABELS_COLUMN: str}, keep_default_na=False, na_values=[""],
                           encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AuditError(f"Cannot parse {str(file)!r} ({str(exc).strip()}); it must be a CSV with a header row.") from None
    meta.columns = [str(c).strip() for c in meta.columns]
    meta = _blanks_missing(meta)
    if "path" not in meta.columns:
        raise AuditError(f"{str(file)!r} has no 'path' column; add one with each image's path relative to "
                         f"{str(root)!r}.")
    clash = [c for c in meta.columns if c in RESERVED_COLUMNS and c not in ("path", "label")]
    if clash:
        raise AuditError(f"{str(file)!r} has a column named {clash[0]!r}, which cnnaudit reserves for results; "
                         "rename it.")
    meta["path"] = [_safe_relpath(root, p, f"{file} row {i + 2}") for i, p in enumerate(meta["path"].fillna(""))]
    dup = meta["path"][meta["path"].duplicated()]
    if len(dup):
        raise AuditError(f"{str(file)!r} lists {dup.iloc[0]!r} more than once; give each image one row.")
    missing = [p for p in meta["path"] if not (root / p).is_file()]
    if missing:
        raise AuditError(f"{str(file)!r} names {len(missing)} file(s) that do not exist, e.g. {missing[0]!r}; "
                         "fix the paths or remove those rows.")
    return meta


def _blanks_missing(meta: pd.DataFrame) -> pd.DataFrame:
    """`meta` with all-whitespace cells missing, like empty ones. A column that held numbers and such a cell
    is read back as numbers, as it would have been with the cell empty."""
    for col in meta.columns:
        values = meta[col]
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        blank = values.notna() & (values.astype(str).str.strip() == "")
        if not blank.any():
            continue
        values = values.mask(blank)
        if col not in ("path", "label", LABELS_COLUMN):
            try:
                values = pd.to_numeric(values)
            except (ValueError, TypeError):
                pass
        meta[col] = values
    return meta


def _renames(columns: list[str]) -> dict[str, str]:
    """{internal name: new name} for metadata columns named like a column cnnaudit writes: META_PREFIX + name,
    with more prefixes while that name is taken too."""
    taken, out = set(columns), {}
    for c in (c for c in columns if c in INTERNAL_COLUMNS):
        new = META_PREFIX + c
        while new in taken:
            new = META_PREFIX + new
        taken.add(new)
        out[c] = new
    return out


SYMLINK = "symbolic link (not followed: it could point outside the data folder)"


def _scan_class_folders(root: Path) -> tuple[list[tuple[str, str]], list[dict]]:
    """(path, class) of every regular file under DATA/<class>/, and the symbolic links met on the way, which
    are listed rather than followed: a class folder linked to / would otherwise walk the whole disk."""
    rows, links = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() or p.is_symlink()):
        if class_dir.is_symlink():
            links.append({"path": class_dir.relative_to(root).as_posix(), "reason": SYMLINK})
            continue
        for folder, dirs, files in os.walk(class_dir, followlinks=False):
            here = Path(folder)
            for name in sorted(dirs + files):
                if (here / name).is_symlink():
                    links.append({"path": (here / name).relative_to(root).as_posix(), "reason": SYMLINK})
            for name in sorted(files):
                f = here / name
                if not f.is_symlink() and f.is_file():
                    rows.append((f.relative_to(root).as_posix(), class_dir.name))
    return rows, sorted(links, key=lambda r: r["path"])


def _mask_paths(root: Path, meta: pd.DataFrame | None) -> set[str]:
    """Every annotation mask named in a `*_mask` column, confined to DATA like the image paths (an absolute
    or escaping path is an error): masks are annotations, never samples."""
    out = set()
    if meta is None:
        return out
    for col in (c for c in meta.columns if c.endswith("_mask")):
        for i, value in enumerate(meta[col]):
            if isinstance(value, str) and value.strip():
                rel = _safe_relpath(root, value, f"{root / METADATA_FILE} row {i + 2}, column {col!r}")
                meta.at[meta.index[i], col] = rel
                out.add(rel)
    return out


def _natural_class_order(labels: list[str]) -> list[str]:
    uniq = sorted(set(labels))
    # '0','1','10','2' sorted as strings would silently misalign integer-labelled classes.
    if all(u.lstrip("-").isdigit() for u in uniq):
        return sorted(uniq, key=int)
    return uniq


def _multilabel_table(root: Path, meta: pd.DataFrame, classes: list[str] | None, label_columns, task: str):
    """(table with path, label, label_name and attribute columns; classes; targets) of multi-label data."""
    file = root / METADATA_FILE
    _mask_paths(root, meta)
    if label_columns:
        missing = [c for c in label_columns if c not in meta.columns]
        if missing:
            raise AuditError(f"--label-columns names {missing[0]!r}, which is not a column of {str(file)!r} (columns: "
                             f"{', '.join(c for c in meta.columns if c != 'path')}).")
        values = meta[list(label_columns)]
        ok = values.isin([0, 1, True, False, "0", "1"])
        if not ok.all().all():
            row, col = np.argwhere(~ok.to_numpy())[0]
            raise AuditError(f"{file} row {row + 2}, column {label_columns[col]!r} holds "
                             f"{values.iat[row, col]!r}; a label column holds 1 (has the label) or 0.")
        targets = values.astype(int).to_numpy()
        names = list(label_columns)
        if classes is not None:
            if sorted(classes) != sorted(names):
                raise AuditError(f"classes.txt lists {', '.join(classes)} but --label-columns gives "
                                 f"{', '.join(names)}; give the same labels (classes.txt sets the output order).")
            targets = targets[:, [names.index(c) for c in classes]]
        else:
            classes = names
        table = meta.drop(columns=list(label_columns))
    else:
        column = LABELS_COLUMN if LABELS_COLUMN in meta.columns else "label" if "label" in meta.columns else None
        if column is None:
            raise AuditError(f"--task multilabel needs the labels of each image: a {LABELS_COLUMN!r} column in "
                             f"{str(file)!r} (names separated by '|', empty for none) or --label-columns.")
        sets = [[] if pd.isna(v) else [p.strip() for p in str(v).split(LABEL_SEPARATOR) if p.strip()]
                for v in meta[column]]
        if classes is None:
            classes = _natural_class_order([n for s in sets for n in s])
        if not classes:
            raise AuditError(f"column {column!r} of {str(file)!r} is empty in every row; give each image its labels "
                             "or list the labels in classes.txt.")
        index = {name: i for i, name in enumerate(classes)}
        targets = np.zeros((len(sets), len(classes)), dtype=np.int64)
        for i, labels in enumerate(sets):
            for name in labels:
                if name not in index:
                    raise AuditError(f"{file} row {i + 2}: label {name!r} (column {column!r}) is not among the "
                                     f"{len(classes)} labels {classes[:5]}{'...' if len(classes) > 5 else ''}; add "
                                     "it to classes.txt or fix the label.")
                targets[i, index[name]] = 1
        table = meta.drop(columns=[column])
    sets = [LABEL_SEPARATOR.join(c for c, t in zip(classes, row) if t) or NO_LABEL for row in targets]
    table = table.assign(label_name=sets)
    order = np.argsort(table["path"].to_numpy(), kind="stable")
    table, targets = table.iloc[order].reset_index(drop=True), targets[order]
    return table, list(classes), targets


def open_dataset(data: str | Path, classes_file: str | Path | None = None, *, task: str = "auto",
                 label_columns=None) -> Dataset:
    root = Path(data)
    if not root.is_dir():
        raise AuditError(f"Data folder {str(root)!r} does not exist or is not a folder; pass a folder of images "
                         "laid out as DATA/<class>/<image> or with a metadata.csv.")
    meta = _read_metadata(root)
    renamed = _renames(list(meta.columns)) if meta is not None else {}
    if renamed:
        meta = meta.rename(columns=renamed)
    classes = None
    if classes_file is not None:
        if not Path(classes_file).is_file():
            raise AuditError(f"--classes {str(classes_file)!r} does not exist; give a text file with one class per line.")
        classes = _read_classes(Path(classes_file))
    elif (root / CLASSES_FILE).is_file():
        classes = _read_classes(root / CLASSES_FILE)

    excluded: list[dict] = []
    if label_columns and meta is None:
        raise AuditError(f"--label-columns needs {str(root / METADATA_FILE)!r} with those columns; add it.")
    if meta is not None and "label" in meta.columns and (label_columns or (
            task != "multiclass" and LABELS_COLUMN in meta.columns)):
        raise AuditError(f"{str(root / METADATA_FILE)!r} has a 'label' column and "
                         f"{'--label-columns' if label_columns else 'a ' + repr(LABELS_COLUMN) + ' column'}; keep one "
                         "source of labels (--task multiclass reads 'label' and keeps 'labels' as metadata).")
    multilabel = task == "multilabel" or (task == "auto" and meta is not None and (
        bool(label_columns) or LABELS_COLUMN in meta.columns))
    if multilabel and meta is None:
        raise AuditError(f"--task multilabel needs {str(root / METADATA_FILE)!r} with a path column and a "
                         f"{LABELS_COLUMN!r} column (names separated by '|') or --label-columns.")
    targets = None
    if multilabel:
        layout = "csv"
        table, classes, targets = _multilabel_table(root, meta, classes, label_columns, task)
        where = "labels"
    elif meta is not None and "label" in meta.columns:
        layout = "csv"
        _mask_paths(root, meta)
        empty = meta["label"].isna() | (meta["label"].astype(str).str.strip() == "")
        if empty.any():
            row = int(empty.to_numpy().nonzero()[0][0]) + 2
            raise AuditError(f"{root / METADATA_FILE} row {row} has an empty 'label'; give every image its class.")
        table = meta.copy()
        table["label_name"] = table.pop("label").astype(str).str.strip()
        where = f"column 'label' of {root / METADATA_FILE}"
    else:
        layout = "imagefolder"
        skip = {METADATA_FILE, CLASSES_FILE}
        rows, excluded = _scan_class_folders(root)
        masks = _mask_paths(root, meta)
        rows = [r for r in rows if r[0] not in masks]
        stray = [p.name for p in root.iterdir() if p.is_file() and p.name not in skip]
        if not rows:
            raise AuditError(f"Data folder {str(root)!r} has no images: put them in one subfolder per class "
                             "(DATA/<class>/<image>) or list them in metadata.csv with a 'label' column"
                             + (f" (found only loose files such as {stray[0]!r})." if stray else "."))
        table = pd.DataFrame(rows, columns=["path", "label_name"])
        where = "class folder"
        if meta is not None:
            table = table.merge(meta, on="path", how="left", validate="one_to_one")
            not_listed = set(meta["path"]) - set(table["path"])
            if not_listed:
                raise AuditError(f"{root / METADATA_FILE} names {next(iter(sorted(not_listed)))!r}, which is not "
                                 "inside a class folder; move it into DATA/<class>/ or add a 'label' column.")

    if not len(table):
        raise AuditError(f"Data folder {str(root)!r} has no samples; add images or rows to metadata.csv.")
    if classes is None:
        classes = (sorted(set(table["label_name"])) if layout == "imagefolder"
                   else _natural_class_order(list(table["label_name"])))
    if targets is not None:  # label index of the image's label set: what --limit stratifies by
        index = {name: i for i, name in enumerate(dict.fromkeys(sorted(table["label_name"])))}
    else:
        index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(table["label_name"]) - set(index))
    if unknown:
        raise AuditError(f"Label {unknown[0]!r} ({where}) is not among the {len(classes)} classes "
                         f"{classes[:5]}{'...' if len(classes) > 5 else ''}; add it to classes.txt or fix the label.")
    if targets is None:  # multi-label tables come sorted with their targets
        table = table.sort_values("path", kind="stable").reset_index(drop=True)
    table.insert(0, "sample_id", range(len(table)))
    table.insert(2, "label", table["label_name"].map(index).astype(int))
    attributes = [c for c in table.columns if c not in RESERVED_COLUMNS]
    table = table[["sample_id", "path", "label", "label_name", *attributes]]
    return Dataset(root=root, classes=list(classes), table=table, attributes=attributes, layout=layout,
                   excluded=excluded, renamed=renamed, targets=targets)
