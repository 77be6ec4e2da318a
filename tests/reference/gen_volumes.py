#!/usr/bin/env python3
"""Small test volumes (a few KB each) and independent references for the tests/test_volume_*.cpp and
tests/test_cli_volumes.cpp suites: nibabel writes NIfTI, SimpleITK writes NRRD, MetaImage and DICOM series; numpy,
scipy, nibabel and SimpleITK compute what sqasam must reproduce.

Under <out>/volumes/:
  formats/vol.{nii.gz,nii,nrrd,nhdr,mha,mhd} one 20x16x7 int16 volume with oblique direction, shifted origin and
    anisotropic spacing, in every format; vol.npy its voxels as float32 [k, j, i]; geometry.json what SimpleITK and
    nibabel read (origin, spacing, direction in ITK's LPS convention; nibabel's affine converted)
  formats/dicom/         the same volume as a CT DICOM series (one file per slice), formats/dicom_two/ two series
  formats/vol4d.nii.gz   a 4D volume (3 volumes); vol4d_1.npy its volume 1
  formats/truncated.nii.gz, formats/short_data.nii  a cut .nii.gz, and a .nii whose header promises more voxels
  formats/labels_u8.nii.gz, labels_binary255.nii.gz, labels_float.nii.gz, soft.nii.gz, negative.nii.gz
  nnunet/                an nnU-Net layout: imagesTs/CASE_0000.nii.gz (and CASE_0001 for case_a), labelsTs/,
    model_a/ and model_b/ predictions (CASE.nii.gz, model_a also CASE.npz probabilities as float16), dataset.json;
    bad cases: case_trunc (truncated image), case_4d (4D image), case_geom (prediction on another grid),
    case_nopred (no prediction)
  nested/                one case in nnU-Net layout (imagesTs/nested_0000.nii.gz, pred/nested.nii.gz) whose three
    classes are nested as BraTS labels are (2 oedema around 4 enhancing around 1 necrotic core), over 32, 20 and 12
    axial slices
  reference.json         per case and model: true Dice per class and mean (numpy), component counts per class
    (scipy.ndimage.label, 26- and 6-connectivity), model confidence (numpy on the npz), agreement of the models;
    windowing references (MedSAM's pre_CT_MR.py rules in numpy) in window_ct.npy / window_mr.npy
"""
import argparse
import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage


def lps_geometry_from_affine(affine):
    """ITK's geometry from a NIfTI affine (RAS): flip the first two rows to LPS, split spacing and direction."""
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    origin = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]
    return {"spacing": spacing.tolist(), "origin": origin.tolist(), "direction": direction.flatten().tolist()}


def sitk_geometry(image):
    return {"size": list(image.GetSize()), "spacing": list(image.GetSpacing()), "origin": list(image.GetOrigin()),
            "direction": list(image.GetDirection())}


def save_kji(path, data_ijk):
    """Voxels as float32 [k, j, i] in C order: our memory order (i fastest)."""
    np.save(path, np.ascontiguousarray(np.asarray(data_ijk, np.float32).transpose(2, 1, 0)))


def oblique_affine(spacing, origin):
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def save_nifti(data_ijk, affine, path, dtype):
    image = nib.Nifti1Image(data_ijk.astype(dtype), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))


def true_dice(pred, gt):
    classes = sorted(set(np.unique(pred).tolist()) | set(np.unique(gt).tolist()) - {0})
    classes = [c for c in classes if c != 0]
    per_class = {}
    for c in classes:
        a, b = pred == c, gt == c
        per_class[str(c)] = float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))
    return {"dice": float(np.mean(list(per_class.values()))) if per_class else 1.0, "class_dice": per_class}


def component_counts(labels):
    counts = {}
    for c in sorted(set(np.unique(labels).tolist()) - {0}):
        _, n26 = ndimage.label(labels == c, structure=np.ones((3, 3, 3)))
        _, n6 = ndimage.label(labels == c, structure=ndimage.generate_binary_structure(3, 1))
        counts[str(c)] = {"26": int(n26), "6": int(n6)}
    return counts


def medsam_window(image, modality, level=40, width=400):
    """MedSAM's pre_CT_MR.py, as it is."""
    if modality == "CT":
        lower_bound, upper_bound = level - width / 2, level + width / 2
        image_data_pre = np.clip(image, lower_bound, upper_bound)
        image_data_pre = (image_data_pre - np.min(image_data_pre)) / (np.max(image_data_pre) - np.min(image_data_pre)) * 255.0
    else:
        lower_bound, upper_bound = np.percentile(image[image > 0], 0.5), np.percentile(image[image > 0], 99.5)
        image_data_pre = np.clip(image, lower_bound, upper_bound)
        image_data_pre = (image_data_pre - np.min(image_data_pre)) / (np.max(image_data_pre) - np.min(image_data_pre)) * 255.0
        image_data_pre[image == 0] = 0
    return np.uint8(image_data_pre)


def blob_labels(shape, rng, shift=(0, 0, 0)):
    """Two classes: class 1 two balls (two 26-components), class 2 a slab touching class 1, plus a lone voxel pair
    joined only diagonally (one 26-component, two 6-components)."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    labels = np.zeros(shape, np.uint8)
    ball = ((i - 12 - shift[0]) ** 2 + (j - 12 - shift[1]) ** 2 + ((k - 5 - shift[2]) * 2.5) ** 2) < 49
    labels[ball] = 1
    ball2 = ((i - 34) ** 2 + (j - 26) ** 2 + ((k - 7) * 2.5) ** 2) < 25
    labels[ball2] = 1
    labels[28:40, 6:12, 3:8] = 2
    labels[4, 30, 2] = 2
    labels[5, 31, 3] = 2
    return labels


def ct_image(labels, rng):
    image = rng.normal(-700, 40, labels.shape)  # lung-like background
    image[labels == 1] = rng.normal(60, 15, (labels == 1).sum())
    image[labels == 2] = rng.normal(200, 20, (labels == 2).sum())
    return np.round(image).astype(np.int16)


def write_formats(out, rng):
    fmt = out / "formats"
    fmt.mkdir(parents=True)
    shape = (20, 16, 7)  # i, j, k
    data = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    affine = oblique_affine([0.7, 0.9, 2.5], [-12.5, 30.25, -7.0])
    save_nifti(data, affine, fmt / "vol.nii.gz", np.int16)
    save_nifti(data, affine, fmt / "vol.nii", np.int16)
    save_kji(fmt / "vol.npy", data)
    image = sitk.ReadImage(str(fmt / "vol.nii.gz"))
    for name in ["vol.nrrd", "vol.nhdr", "vol.mha", "vol.mhd"]:
        sitk.WriteImage(image, str(fmt / name))
    geometry = {"sitk": sitk_geometry(image), "nibabel": lps_geometry_from_affine(nib.load(str(fmt / "vol.nii.gz")).affine)}
    assert np.array_equal(sitk.GetArrayFromImage(image), data.transpose(2, 1, 0)), "SimpleITK reads [k, j, i]"
    assert np.array_equal(np.asarray(nib.load(str(fmt / "vol.nii.gz")).dataobj), data), "nibabel reads [i, j, k]"

    write_dicom_series(image, fmt / "dicom", "1.2.826.0.1.3680043.2.1125.1")
    geometry["dicom"] = sitk_geometry(read_dicom(fmt / "dicom"))
    write_dicom_series(image, fmt / "dicom_two", "1.2.826.0.1.3680043.2.1125.2")
    write_dicom_series(image, fmt / "dicom_two", "1.2.826.0.1.3680043.2.1125.3", prefix="b")
    (fmt / "geometry.json").write_text(json.dumps(geometry, indent=1))

    four = rng.integers(0, 1000, size=shape + (3,)).astype(np.float32)
    save_nifti(four, affine, fmt / "vol4d.nii.gz", np.float32)
    save_kji(fmt / "vol4d_1.npy", four[..., 1])

    whole = (fmt / "vol.nii.gz").read_bytes()
    (fmt / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    raw = (fmt / "vol.nii").read_bytes()
    (fmt / "short_data.nii").write_bytes(raw[: len(raw) - 600])

    labels = np.zeros(shape, np.uint8)
    labels[2:6, 3:9, 1:4] = 1
    labels[10:14, 5:7, 2:6] = 3
    save_nifti(labels, affine, fmt / "labels_u8.nii.gz", np.uint8)
    save_nifti((labels == 3) * 255, affine, fmt / "labels_binary255.nii.gz", np.uint8)
    save_nifti(labels.astype(np.float32), affine, fmt / "labels_float.nii.gz", np.float32)
    soft = rng.random(shape).astype(np.float32)
    save_nifti(soft, affine, fmt / "soft.nii.gz", np.float32)
    save_kji(fmt / "soft_thresholded.npy", soft > 0.5)
    negative = labels.astype(np.int16)
    negative[0, 0, 0] = -1
    save_nifti(negative, affine, fmt / "negative.nii.gz", np.int16)


def write_dicom_series(image, folder, series_uid, prefix=""):
    """One file per slice, as SimpleITK's DICOM series example writes them (CT, int16 HU)."""
    folder.mkdir(exist_ok=True)
    image = sitk.Cast(image, sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    common = [("0008|0060", "CT"), ("0020|000d", "1.2.826.0.1.3680043.2.1125.9"), ("0020|000e", series_uid),
              ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"), ("0008|0018", series_uid),
              ("0020|0037", "\\".join(str(v) for v in (direction[0], direction[3], direction[6], direction[1],
                                                      direction[4], direction[7]))),
              ("0028|1052", "0"), ("0028|1053", "1")]
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        for tag, value in common:
            slice_image.SetMetaData(tag, value)
        slice_image.SetMetaData("0008|0018", f"{series_uid}.{k + 1}")
        slice_image.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0018|0050", str(image.GetSpacing()[2]))
        writer.SetFileName(str(folder / f"{prefix}slice{k:03d}.dcm"))
        writer.Execute(slice_image)


def read_dicom(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def write_nnunet(out, rng, reference):
    root = out / "nnunet"
    for folder in ["imagesTs", "labelsTs", "model_a", "model_b"]:
        (root / folder).mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"},
                                                   "labels": {"background": 0, "tumour": 1, "vessel": 2},
                                                   "numTraining": 0, "file_ending": ".nii.gz"}))
    shape = (48, 40, 12)
    affine = oblique_affine([0.8, 0.8, 2.5], [10.0, -20.0, 5.0])
    reference["nnunet"] = {}
    for n, case in enumerate(["case_a", "case_b", "case_c"]):
        gt = blob_labels(shape, rng)
        image = ct_image(gt, rng)
        pred_a = blob_labels(shape, rng, shift=(n, 0, 0))  # shifted more in each case: lower Dice
        pred_b = blob_labels(shape, rng, shift=(0, n + 1, 0))
        if n == 2:
            pred_b[pred_b == 2] = 0  # model b misses class 2 in case_c
        save_nifti(image, affine, root / "imagesTs" / f"{case}_0000.nii.gz", np.int16)
        save_nifti(gt, affine, root / "labelsTs" / f"{case}.nii.gz", np.uint8)
        save_nifti(pred_a, affine, root / "model_a" / f"{case}.nii.gz", np.uint8)
        save_nifti(pred_b, affine, root / "model_b" / f"{case}.nii.gz", np.uint8)
        # nnU-Net's probabilities: C x Z x Y x X (SimpleITK's array order), float16.
        one_hot = np.stack([pred_a == c for c in range(3)]).astype(np.float32)
        probabilities = (0.8 * one_hot + 0.2 * rng.dirichlet(np.ones(3), size=shape).transpose(3, 0, 1, 2))
        probabilities = probabilities.transpose(0, 3, 2, 1).astype(np.float16)
        # nnU-Net's transposes can leave the array Fortran-ordered (np.save then says so): case_b's is.
        probabilities = np.asfortranarray(probabilities) if case == "case_b" else np.ascontiguousarray(probabilities)
        np.savez_compressed(root / "model_a" / f"{case}.npz", probabilities=probabilities)
        reference["nnunet"][case] = {
            "model_a": {**true_dice(pred_a, gt), "components": component_counts(pred_a),
                        "model_confidence": float(probabilities.astype(np.float64).max(axis=0).mean()),
                        "class_voxels": {str(c): int((pred_a == c).sum()) for c in (1, 2) if (pred_a == c).any()}},
            "model_b": {**true_dice(pred_b, gt), "components": component_counts(pred_b)},
            "agreement": true_dice(pred_a, pred_b)["dice"],
            "geometry": lps_geometry_from_affine(affine),
        }
        if case == "case_a":
            save_nifti(image, affine, root / "imagesTs" / f"{case}_0001.nii.gz", np.int16)
            save_kji(out / "window_ct.npy", medsam_window(image.astype(np.float64), "CT"))
            mr = np.abs(image.astype(np.float64) + 800) * 3.3
            mr[:, :, 0] = 0
            save_nifti(mr.astype(np.float32), affine, out / "mr.nii.gz", np.float32)
            save_kji(out / "window_mr.npy", medsam_window(mr.astype(np.float32).astype(np.float64), "MR"))

    # Broken cases: the run must flag them and go on.
    good = root / "imagesTs" / "case_a_0000.nii.gz"
    whole = good.read_bytes()
    (root / "imagesTs" / "case_trunc_0000.nii.gz").write_bytes(whole[: len(whole) // 3])
    shutil.copy(root / "model_a" / "case_a.nii.gz", root / "model_a" / "case_trunc.nii.gz")
    four = np.stack([ct_image(blob_labels(shape, rng), rng)] * 2, axis=-1)
    save_nifti(four, affine, root / "imagesTs" / "case_4d_0000.nii.gz", np.int16)
    shutil.copy(root / "model_a" / "case_a.nii.gz", root / "model_a" / "case_4d.nii.gz")
    shutil.copy(good, root / "imagesTs" / "case_geom_0000.nii.gz")
    save_nifti(blob_labels(shape, rng), oblique_affine([0.8, 0.8, 3.0], [10.0, -20.0, 5.0]),
               root / "model_a" / "case_geom.nii.gz", np.uint8)
    shutil.copy(good, root / "imagesTs" / "case_nopred_0000.nii.gz")


def write_nested(out, rng):
    root = out / "nested"
    for folder in ["imagesTs", "pred"]:
        (root / folder).mkdir(parents=True)
    shape = (32, 32, 40)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    radius = np.sqrt(((i - 16) / 14.0) ** 2 + ((j - 16) / 14.0) ** 2 + ((k - 19.5) / 16.0) ** 2)
    labels = np.zeros(shape, np.uint8)
    labels[radius <= 1.0] = 2  # slices 4..35
    labels[radius <= 0.625] = 4  # 10..29
    labels[radius <= 0.375] = 1  # 14..25
    image = np.where(labels > 0, 400.0 + 200.0 * labels, 300.0) + rng.normal(0, 20, shape)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    save_nifti(image.astype(np.float32), affine, root / "imagesTs" / "nested_0000.nii.gz", np.float32)
    save_nifti(labels, affine, root / "pred" / "nested.nii.gz", np.uint8)


def main():
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # MetaImage warns about NIfTI fields it drops
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--shared", default="")
    args = parser.parse_args()
    out = Path(args.out) / "volumes"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = np.random.default_rng(20261203)
    write_formats(out, rng)
    reference = {}
    write_nnunet(out, rng, reference)
    write_nested(out, rng)
    (out / "reference.json").write_text(json.dumps(reference, indent=1))


if __name__ == "__main__":
    main()
