"""FER2013 (+ TFD) still faces for the frame-level CNN (paper-spec §1-§2).

Train = FER2013 (+ labelled TFD): every FER2013 image with ``fer_train="all"`` (the paper's 35,887; no FER face is
left to test on, so there is no test split), or the Training usage with ``fer_train="training"`` (test = PublicTest).
Early-stopping set = the AFEW Train+Val face frames (the paper's choice, frame label = clip label) or a stratified
hold-out slice of the training faces.
Every face is histogram-equalised once in ``setup``; TFD faces are then registered to the FER2013 frame
(``tfd_registration="mean_shape"``, the paper's: :mod:`emotiw.faces.register`) before the two are mixed. The mean/std
normaliser is fitted on the training faces and handed to the CNN (it stores it in its buffers). Cropping and
flipping happen in the CNN, per batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from datamodules.padding import padded_index
from emotiw.artifacts import read_cache_npz
from emotiw.checks import check_batch, check_number
from emotiw.io import FaceSet, read_fer_csv, read_fer_images, read_tfd_mat
from emotiw.preprocess import MeanStdImage

log = logging.getLogger(__name__)

VAL_SOURCES = ("afew", "fer_holdout")
FER_TRAIN = ("all", "training")
TFD_REGISTRATIONS = ("mean_shape", "none")
FER_FORMATS = ("csv", "images")
# Bump when reading or equalising changes what a cache entry holds.
CACHE_VERSION = 3  # 3: TFD registered to the FER frame
SPLIT_NAMES = ("train", "val", "test")


class FaceDataset(Dataset):
    """In-memory faces; items are dicts so callbacks can de-duplicate by ``index`` after a gather."""

    def __init__(self, faces: FaceSet) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(faces.images))
        self.labels = torch.from_numpy(faces.labels.astype(np.int64))
        self.keys = faces.keys

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": self.labels[i], "index": i}


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch from ``seed + epoch`` (Lightning calls ``set_epoch``), never from the global RNG:
    a run resumed from a checkpoint sees the same order as an uninterrupted one."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class DeviceBatches(Dataset):
    """The faces copied once to ``device``; an item is a whole batch (a list of indices), so that training on a GPU
    never copies or collates faces on the host."""

    def __init__(self, faces: FaceDataset, device: str, index: np.ndarray | None = None) -> None:
        ids = torch.arange(len(faces)) if index is None else torch.as_tensor(index, dtype=torch.int64)
        self.ids = ids.to(device)  # item i is face ids[i] (a padded epoch repeats some)
        self.images, self.labels = faces.images[ids].to(device), faces.labels[ids].to(device)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, indices: list[int]) -> dict[str, Any]:
        idx = torch.as_tensor(indices, device=self.ids.device)
        return {"image": self.images[idx], "label": self.labels[idx], "index": self.ids[idx]}


class Batches(Sampler[list[int]]):
    """Lists of ``size`` consecutive indices of ``order`` (the last one shorter); ``set_epoch`` reaches ``order``."""

    def __init__(self, order: Sampler[int] | range, size: int) -> None:
        self.order, self.size = order, size

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.order, "set_epoch"):
            self.order.set_epoch(epoch)

    def __iter__(self):
        indices = list(self.order)
        return iter(indices[i : i + self.size] for i in range(0, len(indices), self.size))

    def __len__(self) -> int:
        return -(-len(self.order) // self.size)


class FerTfdDataModule(L.LightningDataModule):
    def __init__(
        self,
        *,
        root: str,
        fer_format: Literal["csv", "images"] = "csv",
        csv_name: str = "fer2013.csv",
        resize: bool = False,
        tfd_mat: str | None = None,
        val_source: Literal["afew", "fer_holdout"] = "afew",
        afew_root: str | None = None,
        afew_splits: tuple[str, ...] = ("Train", "Val"),
        holdout_fraction: float = 0.1,
        histeq_levels: int | None = 64,
        batch_size: int = 128,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int = 1,
        pad_to_batch: bool = True,
        fer_train: Literal["all", "training"] = "all",
        face_source: str = "auto",
        noise_seed: int = 0,
        tfd_registration: Literal["mean_shape", "none"] = "mean_shape",
        still_points: Literal["auto", "sidecar", "centerface"] = "auto",
        mean_shape_sample: int = 2000,
        device: str | None = None,
    ) -> None:
        super().__init__()
        check_batch("data", batch_size, num_workers)
        if histeq_levels is not None:
            check_number("data.histeq_levels", histeq_levels, min_val=2, max_val=256, integer=True)
        self.save_hyperparameters(logger=False)
        # Plain containers only: checkpoints must load with torch.load(weights_only=True), which refuses OmegaConf types.
        for key, value in self.hparams.items():
            if isinstance(value, (ListConfig, DictConfig)):
                self.hparams[key] = OmegaConf.to_container(value)
        self.batch_size_per_device = batch_size
        self.normaliser: MeanStdImage | None = None
        self.data: dict[str, FaceSet] = {}
        self.registration = None  # the TFD -> FER registration when this run fitted it (not on a cache hit)

    # ----------------------------------------------------------------- sources
    def _check_config(self) -> None:
        hp = self.hparams
        if hp.fer_format not in FER_FORMATS:
            raise ValueError(f"data.fer_format={hp.fer_format!r}; expected one of {FER_FORMATS}")
        if hp.fer_train not in FER_TRAIN:
            raise ValueError(f"data.fer_train={hp.fer_train!r}; expected one of {FER_TRAIN}")
        if hp.val_source not in VAL_SOURCES:
            raise ValueError(f"data.val_source={hp.val_source!r}; expected one of {VAL_SOURCES}")
        if hp.tfd_registration not in TFD_REGISTRATIONS:
            raise ValueError(
                f"data.tfd_registration={hp.tfd_registration!r}; expected one of {TFD_REGISTRATIONS}"
            )
        if not 0 < hp.holdout_fraction < 1:
            raise ValueError(f"data.holdout_fraction={hp.holdout_fraction} must be in (0, 1)")
        missing = []
        fer = self._fer_path()
        if not fer.exists():
            missing.append(
                f"data.root: {fer} ({'fer2013.csv' if hp.fer_format == 'csv' else '<root>/{train,test}/<emotion>/'} expected)"
            )
        if hp.tfd_mat and not Path(hp.tfd_mat).is_file():
            missing.append(f"data.tfd_mat: {hp.tfd_mat}")
        if hp.val_source == "afew" and not hp.histeq_levels:
            raise ValueError(
                f"data.histeq_levels={hp.histeq_levels!r}: the AFEW early-stopping frames are aligned with histogram "
                "equalisation; set it (64, the authors' value) or use val_source=fer_holdout"
            )
        if hp.val_source == "afew" and not (hp.afew_root and Path(hp.afew_root).is_dir()):
            missing.append(
                f"data.afew_root: {hp.afew_root} (needed by val_source=afew; use val_source=fer_holdout without AFEW)"
            )
        if missing:
            raise FileNotFoundError("missing input(s): " + "; ".join(missing))

    def _fer_path(self) -> Path:
        root = Path(self.hparams.root)
        return root / self.hparams.csv_name if self.hparams.fer_format == "csv" else root

    def _source_files(self) -> list[Path]:
        hp = self.hparams
        files = [self._fer_path()]
        if hp.fer_format == "images":
            files = sorted(
                p for split in ("train", "test") for p in (files[0] / split).rglob("*") if p.is_file()
            )
        if hp.tfd_mat:
            files.append(Path(hp.tfd_mat))
            if hp.tfd_registration == "mean_shape":  # the points the mean shapes average
                from emotiw.io.points import POINTS_FILE

                dirs = (self._fer_points_dir(), Path(hp.tfd_mat).parent)
                files += [d / POINTS_FILE for d in dirs if (d / POINTS_FILE).is_file()]
        if hp.val_source == "afew":
            from emotiw.io.afew import list_splits

            for ref in list_splits(hp.afew_root, tuple(hp.afew_splits)):
                files.append(ref.video_path)
                if ref.landmarks_path is not None:
                    files.append(ref.landmarks_path)
        return files

    def _fer_points_dir(self) -> Path:
        """Where a FER2013 ``face_points.csv`` sits: beside the CSV, or at the image root."""
        return self._fer_path().parent if self.hparams.fer_format == "csv" else self._fer_path()

    def data_hash(self) -> str:
        """Hash of everything the faces depend on: the source files (FER, TFD and, for ``val_source=afew``, the
        AFEW clips and landmarks of ``afew_splits``) with sizes and mtimes, the settings that choose or change
        faces (the hold-out slice and its seed, the AFEW splits and alignment, histogram levels, ...) and the
        cache version. It names the cache entry, so any change reads the sources again."""
        hp = self.hparams
        keys = ("fer_format", "csv_name", "resize", "tfd_mat", "fer_train", "val_source", "histeq_levels")
        settings: dict[str, Any] = {k: hp[k] for k in keys}
        settings["version"] = CACHE_VERSION
        if hp.tfd_mat:
            keys = ("tfd_registration", "still_points", "mean_shape_sample", "noise_seed", "seed")
            settings.update({k: hp[k] for k in keys})
        if hp.val_source == "fer_holdout":
            settings.update(holdout_fraction=float(hp.holdout_fraction), seed=int(hp.seed))
        else:
            from emotiw.faces import make_face_source

            settings.update(
                afew_splits=list(hp.afew_splits),
                face_source=make_face_source(hp.face_source, hp.afew_root).cache_id(),
                align=self._afew_align_config().key(),
            )
        h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for p in self._source_files():
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def _read(self) -> dict[str, FaceSet]:
        hp = self.hparams
        if hp.fer_format == "csv":
            usages = (
                ("Training", "PublicTest", "PrivateTest")
                if hp.fer_train == "all"
                else ("Training", "PublicTest")
            )
            sets = read_fer_csv(self._fer_path(), usages=usages)
            train, test = sets["Training"], sets["PublicTest"]
            if hp.fer_train == "all":
                train, test = FaceSet.concat([train, test, sets["PrivateTest"]]), test.subset(np.arange(0))
        else:
            train = read_fer_images(hp.root, "train", resize=hp.resize)
            test = read_fer_images(hp.root, "test", resize=hp.resize)
            if hp.fer_train == "all":  # the Kaggle folders: train/ (Training) and test/ (PublicTest)
                train, test = FaceSet.concat([train, test]), test.subset(np.arange(0))
        tfd = read_tfd_mat(hp.tfd_mat) if hp.tfd_mat else None
        # an empty TFD (no labelled faces) has no mean shape to register
        if tfd is not None and len(tfd) and hp.tfd_registration == "mean_shape":
            from emotiw.faces.register import fit_registration

            self.registration = fit_registration(
                tfd,
                Path(hp.tfd_mat).parent,
                train,
                self._fer_points_dir(),
                hp.still_points,
                sample=hp.mean_shape_sample,
                seed=hp.seed,
            )
            log.info("TFD -> FER2013 frame: %s", self.registration.summary())
        # Histogram equalisation of each face as a whole, then (TFD) the registration over its noise border.
        train, test = self._equalise(train), self._equalise(test)
        if tfd is not None:
            tfd = self._equalise(tfd)
            if self.registration is not None:
                from emotiw.faces.register import register_faces

                rng = np.random.default_rng([hp.noise_seed, 0])
                tfd = FaceSet(register_faces(tfd.images, self.registration.matrix, rng), tfd.labels, tfd.keys)
            train = FaceSet.concat([train, tfd])
        if hp.val_source == "fer_holdout":
            from sklearn.model_selection import train_test_split

            idx = np.arange(len(train))
            fit_idx, val_idx = train_test_split(
                idx, test_size=hp.holdout_fraction, stratify=train.labels, random_state=hp.seed
            )
            val = train.subset(np.sort(val_idx))
            train = train.subset(np.sort(fit_idx))
        else:
            val = self._read_afew()
        return {"train": train, "val": val, "test": test}

    def _afew_align_config(self):
        from emotiw.faces import AlignConfig

        return AlignConfig(levels=self.hparams.histeq_levels, seed=self.hparams.noise_seed)

    def _read_afew(self) -> FaceSet:
        from emotiw.faces import load_afew_faces

        hp = self.hparams
        # found and aligned as stage=faces does (same source and AlignConfig), so both read the same cache entries
        clips, report = load_afew_faces(
            hp.afew_root,
            splits=tuple(hp.afew_splits),
            cache_dir=hp.cache_dir or "cache",
            face_source=hp.face_source,
            config=self._afew_align_config(),
        )
        log.info("AFEW early-stopping frames: %s", report.summary())
        sets = [
            FaceSet(
                np.asarray(c.faces, np.uint8),
                np.full(len(c.faces), c.label, np.int64),
                np.array([f"{c.split}/{c.clip_id}:{int(f)}" for f in c.frame_idx], dtype=str),
            )
            for c in clips
            if len(c.faces) and c.label >= 0
        ]
        if not sets:
            raise ValueError(
                f"{hp.afew_root}: no labelled AFEW face frames in splits {list(hp.afew_splits)} "
                f"({report.summary()}); use val_source=fer_holdout without AFEW faces"
            )
        return FaceSet.concat(sets)

    def _equalise(self, faces: FaceSet) -> FaceSet:
        if not self.hparams.histeq_levels:
            return faces
        from emotiw.faces.histeq import equalize_hist

        levels = int(self.hparams.histeq_levels)
        images = (
            np.stack([equalize_hist(img, levels) for img in faces.images]) if len(faces) else faces.images
        )
        return FaceSet(images, faces.labels, faces.keys)

    def _read_cache(self, path: Path, key: str) -> dict[str, FaceSet]:
        """A cache entry, verified; raises ValueError naming the file when it is damaged or not this key's."""
        names = [f"{s}_{a}" for s in SPLIT_NAMES for a in ("images", "labels", "keys")]
        z = read_cache_npz(path, key, names)
        data = {}
        for s in SPLIT_NAMES:
            images, labels, keys = z[f"{s}_images"], z[f"{s}_labels"], z[f"{s}_keys"]
            if (
                images.dtype != np.uint8
                or images.shape[1:] != (48, 48)
                or not len(images) == len(labels) == len(keys)
            ):
                raise ValueError(
                    f"{path}: cache file has {s} images {images.dtype} {images.shape}, {len(labels)} labels, "
                    f"{len(keys)} keys"
                )
            data[s] = FaceSet(images, labels, keys)
        return data

    def _load_cached(self) -> dict[str, FaceSet]:
        """Read + equalise every split, through an ``.npz`` cache keyed by ``data_hash`` when ``cache_dir`` is set;
        a damaged entry is logged and rebuilt."""
        key = self.data_hash() if self.hparams.cache_dir else None
        cache = Path(self.hparams.cache_dir) / "fer_tfd" / f"{key}.npz" if key else None
        if cache is not None and cache.is_file():
            try:
                return self._read_cache(cache, key)
            except ValueError as err:
                log.warning("rebuilding the FER/TFD face cache: %s", err)
        # _read equalises the stills; AFEW frames come out of emotiw.faces already equalised (before registration).
        data = self._read()
        if cache is not None:
            from emotiw.artifacts import save_npz

            arrays = {"key": np.asarray(key)}
            for s, f in data.items():
                arrays.update({f"{s}_images": f.images, f"{s}_labels": f.labels, f"{s}_keys": f.keys})
            if int(os.environ.get("LOCAL_RANK", 0)) == 0:
                save_npz(cache, **arrays)
        return data

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            world = self.trainer.world_size
            if self.hparams.batch_size % world != 0:
                raise RuntimeError(
                    f"data.batch_size={self.hparams.batch_size} is not divisible by the number of devices ({world})"
                )
            self.batch_size_per_device = self.hparams.batch_size // world
        if self.data:
            return
        self._check_config()
        self.data = self._load_cached()
        for split, faces in self.data.items():
            if len(faces) == 0 and not (split == "test" and self.hparams.fer_train == "all"):
                raise ValueError(f"split {split!r} is empty (data.root={self.hparams.root})")
        self.normaliser = MeanStdImage().fit(self.data["train"].images)
        log.info("faces: %s", {s: len(f) for s, f in self.data.items()})

    def _dataloader(self, split: str) -> DataLoader:
        train = split == "train"
        dataset = FaceDataset(self.data[split])
        index = None
        if train and self.hparams.pad_to_batch:
            # the authors' full last batch (random duplicates, spec §12.9)
            index = padded_index(len(dataset), self.hparams.batch_size, self.hparams.seed)
            dataset = Subset(dataset, index.tolist())
        if self.hparams.device:
            faces = DeviceBatches(FaceDataset(self.data[split]), self.hparams.device, index)
            order = EpochShuffleSampler(len(faces), self.hparams.seed) if train else range(len(faces))
            return DataLoader(faces, sampler=Batches(order, self.batch_size_per_device), batch_size=None)
        return DataLoader(
            dataset,
            batch_size=self.batch_size_per_device,
            sampler=EpochShuffleSampler(len(dataset), self.hparams.seed) if train else None,
            # the loader's own generator: creating an iterator then draws nothing from the global RNG
            generator=torch.Generator().manual_seed(self.hparams.seed),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._dataloader("train")

    def val_dataloader(self) -> DataLoader:
        return self._dataloader("val")

    def test_dataloader(self) -> DataLoader | list:
        # fer_train=all trains on every FER2013 face: nothing is left to test on (Lightning skips an empty list)
        return self._dataloader("test") if len(self.data["test"]) else []
