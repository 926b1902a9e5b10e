import galsim
import numpy as np
import pandas as pd
import pytest

from sourcelens.augment import augment, dihedral_copies, rotate_flux_conserving
from sourcelens.split import assign_splits, check_no_leakage


def _stamps(n=5, size=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices((size, size))
    imgs = []
    for _ in range(n):
        cy, cx = rng.uniform(12, 20, 2)
        imgs.append(np.exp(-((yy - cy) ** 2 / 8 + (xx - cx) ** 2 / 20)).astype(np.float32))
    meta = pd.DataFrame({"source_id": [f"s{i}" for i in range(n)], "kind": "parametric"})
    return np.stack(imgs), meta


def test_dihedral_copies_distinct():
    img, _ = _stamps(1)
    copies = dihedral_copies(img[0], True, True)
    assert len(copies) == 8
    flat = {c[1].tobytes() for c in copies}
    assert len(flat) == 8


@pytest.mark.parametrize("angle", [17.0, 45.0, 123.4, 200.0])
def test_rotation_matches_galsim(angle):
    """The rotated stamp is GalSim's drawing of the rotated galaxy (an independent rotation of the profile),
    to 1 % of the peak; the opposite sense is far off."""
    gal = galsim.Convolve(galsim.Sersic(n=1.5, half_light_radius=0.15).shear(g1=0.4, g2=0.1).shift(0.05, 0.02),
                          galsim.Gaussian(fwhm=0.1))
    img = gal.drawImage(nx=64, ny=64, scale=0.03).array.astype(np.float64)
    rot = rotate_flux_conserving(img, angle)
    ref = gal.rotate(-angle * galsim.degrees).drawImage(nx=64, ny=64, scale=0.03).array
    other = gal.rotate(angle * galsim.degrees).drawImage(nx=64, ny=64, scale=0.03).array
    assert np.abs(rot - ref).max() < 0.01 * ref.max()
    assert np.abs(rot - other).max() > 0.2 * ref.max()
    assert rot.sum() == pytest.approx(img.sum(), rel=1e-9)


def test_right_angle_rotation_is_exact():
    img, _ = _stamps(1)
    np.testing.assert_allclose(rotate_flux_conserving(img[0], 90.0), np.rot90(img[0], 1), atol=1e-6)


def test_augment_keeps_parent_ids_and_flux():
    imgs, meta = _stamps(4)
    cfg = {"rot90": True, "flips": True, "n_random_rotations": 2, "max_copies": None}
    out, out_meta = augment(imgs, meta, cfg, np.random.default_rng(0))
    assert len(out) == 4 * 10
    for i, row in out_meta.iterrows():
        assert row["source_id"] == meta["source_id"][row["parent_index"]]
        parent = imgs[row["parent_index"]]
        assert out[i].sum() == pytest.approx(parent.sum(), rel=1e-5)
        name = row["augmentation"]
        if name in ("original", "rot90", "flip"):  # the dihedral copies are exact re-arrangements
            expected = {"original": parent, "rot90": np.rot90(parent, 1), "flip": np.fliplr(parent)}[name]
            np.testing.assert_array_equal(out[i], expected)
        elif name.startswith("rot") and not name[3:].isdigit():
            np.testing.assert_allclose(out[i], rotate_flux_conserving(parent, float(name[3:])), atol=1e-3)
    capped, capped_meta = augment(imgs, meta, dict(cfg, max_copies=3), np.random.default_rng(0))
    assert len(capped) == 12 and (capped_meta.groupby("source_id").size() == 3).all()
    assert (capped_meta.groupby("source_id")["augmentation"].first() == "original").all()


def test_split_by_source_no_leakage():
    ids = np.repeat([f"g{i}" for i in range(50)], 6)
    fr = {"train": 0.7, "val": 0.15, "test": 0.15}
    splits = assign_splits(ids, fr, np.random.default_rng(1))
    df = pd.DataFrame({"source_id": ids, "split": splits})
    assert (df.groupby("source_id")["split"].nunique() == 1).all()
    counts = df.groupby("split")["source_id"].nunique()
    assert counts["train"] == 34 and counts["val"] == 8 and counts["test"] == 8  # round(7.5) = 8
    check_no_leakage({s: df[df.split == s] for s in ("train", "val", "test")})
    # the same seed gives the same split whatever the row order
    again = assign_splits(ids[::-1], fr, np.random.default_rng(1))[::-1]
    assert np.array_equal(splits, again)


def test_split_stratified_by_kind():
    """Each kind is split with the fractions on its own: 20 real galaxies among 200 parametric ones give 2 real
    val and 2 real test galaxies every time, not whatever a joint draw leaves; a galaxy shared by two kinds (a
    real stamp and its fit) stays in one split."""
    ids = np.array([f"p{i}" for i in range(200)] + [f"c{i}" for i in range(20)] + ["c0", "c1"])
    kinds = np.array(["parametric"] * 200 + ["cosmos"] * 20 + ["cosmos_fit"] * 2)
    fr = {"train": 0.8, "val": 0.1, "test": 0.1}
    for seed in range(5):
        splits = assign_splits(ids, fr, np.random.default_rng(seed), strata=kinds)
        df = pd.DataFrame({"source_id": ids, "kind": kinds, "split": splits})
        assert (df.groupby("source_id")["split"].nunique() == 1).all()
        real = df[(df.kind == "cosmos") & ~df.source_id.isin(["c0", "c1"])].groupby("split").size()
        assert real["val"] == 2 and real["test"] == 2      # round(0.1 * 18)
        param = df[df.kind == "parametric"].groupby("split").size()
        assert param["val"] == 20 and param["test"] == 20


def test_leak_detected_and_small_split_errors():
    a = pd.DataFrame({"source_id": ["x", "y"]})
    b = pd.DataFrame({"source_id": ["y"]})
    with pytest.raises(AssertionError, match="source_id 'y'"):
        check_no_leakage({"train": a, "test": b})
    with pytest.raises(ValueError, match="'val' split"):
        assign_splits(["a", "b"], {"train": 0.8, "val": 0.1, "test": 0.1}, np.random.default_rng(0))


def test_every_array_gets_the_same_copies():
    """The noiseless truth is rotated and flipped exactly as the image (same angles, same kept copies), and
    real galaxies' NaN truth stays NaN."""
    imgs, meta = _stamps(3)
    truth = imgs * 0.5
    truth[1] = np.nan
    cfg = {"rot90": True, "flips": True, "n_random_rotations": 2, "max_copies": 5}
    out, out_meta = augment({"images": imgs, "images_noiseless": truth}, meta, cfg, np.random.default_rng(4))
    alone, alone_meta = augment(imgs, meta, cfg, np.random.default_rng(4))
    assert np.array_equal(out["images"], alone) and out_meta.equals(alone_meta)     # the draws do not change
    parent = out_meta["parent_index"].to_numpy()
    ok = parent != 1
    np.testing.assert_allclose(out["images_noiseless"][ok], 0.5 * out["images"][ok], rtol=1e-5, atol=1e-7)
    assert np.isnan(out["images_noiseless"][~ok]).all()


@pytest.mark.parametrize("k,flip", [(k, f) for f in (False, True) for k in range(4)])
def test_dihedral_lens_params_match_lenstronomy(k, flip):
    """Rendering the transformed lens (and source position) with lenstronomy gives the transformed image: the
    ellipticity and shear rotate as spin-2, the centre as a vector (EPL + shear, an off-centre elliptical source)."""
    import torch
    from sourcelens.augment import dihedral_image, dihedral_lens_params
    from sourcelens.names import LENS_PARAMETERS
    from sourcelens.simulate import LensedImageRenderer, lens_kwargs, make_psf

    renderer = LensedImageRenderer(40, 0.1, ["EPL", "SHEAR"], "SERSIC_ELLIPSE", make_psf({"type": "NONE"}, 0.1), 2)
    params = np.array([1.1, 2.1, 0.12, -0.07, 0.08, -0.05, 0.04, 0.03])
    source = {"amp": 1.0, "R_sersic": 0.2, "n_sersic": 1.5, "e1": 0.2, "e2": 0.1, "center_x": 0.1, "center_y": 0.04}

    def render(p, src):
        return renderer.render(lens_kwargs("EPL", dict(zip(LENS_PARAMETERS, p)))[1], [src], unlensed=False)[0]

    # the source's position and ellipticity transform like the lens centre and ellipticity
    as_lens = np.array([0, 0, source["e1"], source["e2"], source["center_x"], source["center_y"], 0, 0])
    moved = dihedral_lens_params(as_lens, k, flip)
    src = dict(source, e1=moved[2], e2=moved[3], center_x=moved[4], center_y=moved[5])
    expect = dihedral_image(render(params, source), k, flip)
    got = render(dihedral_lens_params(params, k, flip), src)
    np.testing.assert_allclose(got, expect, atol=1e-6 * expect.max())
    # torch tensors give the same numbers, and the transform is a group action (flip twice = identity)
    t = dihedral_lens_params(torch.tensor(params), k, flip).numpy()
    np.testing.assert_allclose(t, dihedral_lens_params(params, k, flip))
    np.testing.assert_allclose(dihedral_lens_params(dihedral_lens_params(params, 0, True), 0, True), params)
