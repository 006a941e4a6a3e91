"""Ground-truth tracks against hand computation on known scenes."""
import numpy as np
import pytest

from tracks.geometry import CameraError, build_tracks, check_cameras, grid_points

H, W = 60, 80
FX = FY = 50.0
CX, CY = (W - 1) / 2, (H - 1) / 2


def K_():
    return np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1]], dtype=np.float64)


def pose(R=np.eye(3), t=(0, 0, 0)):
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def rot_y(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def plane_depth(Z, F=1):
    return np.full((F, H, W), Z, dtype=np.float32)


def test_grid_points_are_cell_centres():
    pts = grid_points(2, 4, 8)  # cells 4 px wide, 2 px tall
    # centre of the first 4x2 cell in the (0,0)=pixel-centre convention is x=1.5, y=0.5
    assert np.allclose(pts, [[1.5, 0.5], [5.5, 0.5], [1.5, 2.5], [5.5, 2.5]])
    assert grid_points(24, 540, 960).shape == (576, 2)


def test_known_point_projects_to_known_pixel():
    # A fronto-parallel wall at Z=4 seen by 3 cameras (identity, translated, rotated).
    Z = 4.0
    poses = [pose(), pose(t=(-0.5, 0.2, 0.0)), pose(R=rot_y(10), t=(0.1, 0, 0.3))]
    T = np.stack(poses)
    q = np.array([[30.0, 20.0]])
    # world point by hand: X = (x - cx) Z / f
    Xw = np.array([(30.0 - CX) * Z / FX, (20.0 - CY) * Z / FY, Z])
    depth = np.stack([_depth_of_wall(Tf, Z) for Tf in T])
    tracks, vis, tdepth = build_tracks(depth, np.stack([K_()] * 3), T, grid=None, points=q)
    for f, Tf in enumerate(T):
        Xc = Tf[:3, :3] @ Xw + Tf[:3, 3]
        expect = np.array([FX * Xc[0] / Xc[2] + CX, FY * Xc[1] / Xc[2] + CY])
        assert np.allclose(tracks[f, 0], expect, atol=1e-4)
        assert np.isclose(tdepth[f, 0], Xc[2], rtol=1e-6)
        assert vis[f, 0]


def _depth_of_wall(T, Z):
    """Depth map of the world plane z = Z seen from camera T (ray casting by hand)."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    rays_c = np.stack([(xs - CX) / FX, (ys - CY) / FY, np.ones_like(xs)], -1)   # (H, W, 3), z=1
    R, t = T[:3, :3], T[:3, 3]
    centre = -R.T @ t
    dirs = rays_c @ R                                                           # R^T d in world
    s = (Z - centre[2]) / dirs[..., 2]                                          # ray length scale
    return (s * 1.0).astype(np.float32)                                         # camera z = s for z=1 rays


def test_two_view_pure_translation_reproduces_disparity():
    Z, b = 5.0, 0.4
    T = np.stack([pose(), pose(t=(-b, 0, 0))])   # camera 2 is b metres to the right
    tracks, vis, tdepth = build_tracks(plane_depth(Z, 2), np.stack([K_()] * 2), T, grid=8)
    v = vis[1]
    assert v.sum() > 0
    disparity = tracks[0, v, 0] - tracks[1, v, 0]
    assert np.allclose(disparity, FX * b / Z, atol=1e-4)
    assert np.allclose(tracks[0, v, 1], tracks[1, v, 1], atol=1e-5)
    assert np.allclose(tdepth[:, v], Z)


def test_out_of_image_point_is_invisible():
    Z = 5.0
    T = np.stack([pose(), pose(t=(-3.0, 0, 0))])   # shift 30 px: left columns leave the image
    tracks, vis, _ = build_tracks(plane_depth(Z, 2), np.stack([K_()] * 2), T, grid=8)
    out = tracks[1, :, 0] < -0.5
    assert out.any() and not vis[1, out].any()
    assert vis[1, ~out].all()


def test_occluded_point_is_invisible():
    # Background wall at Z=6; in frame 2 an occluder at Z=2 covers the left half.
    T = np.stack([pose(), pose()])
    depth = plane_depth(6.0, 2)
    depth[1, :, : W // 2] = 2.0
    tracks, vis, tdepth = build_tracks(depth, np.stack([K_()] * 2), T, grid=8)
    left = tracks[1, :, 0] < W // 2 - 0.5
    assert left.any() and not vis[1, left].any() and vis[1, ~left].all()
    assert np.allclose(tdepth[1], 6.0)   # depth of the point itself, not of the occluder


def test_invalid_query_depth_is_kept_and_invisible():
    depth = plane_depth(3.0, 2)
    depth[0, :H // 2] = np.nan
    depth[0, H // 2:, : W // 2] = 0.0
    tracks, vis, tdepth = build_tracks(depth, np.stack([K_()] * 2), np.stack([pose(), pose()]), grid=4)
    assert tracks.shape == (2, 16, 2)
    bad = np.zeros(16, bool)
    bad[:8] = True          # top two rows: NaN depth
    bad[[8, 9, 12, 13]] = True  # bottom-left cells: zero depth
    assert not vis[:, bad].any()
    assert vis[:, ~bad].all()
    assert np.isnan(tdepth[1, bad]).all()
    assert np.allclose(tracks[0], grid_points(4, H, W))


def test_relative_tolerance_boundary():
    depth = plane_depth(10.0, 2)
    depth[1] = 10.0 * 1.04      # within 5 %
    _, vis, _ = build_tracks(depth, np.stack([K_()] * 2), np.stack([pose(), pose()]), grid=4)
    assert vis[1].all()
    depth[1] = 10.0 * 1.06      # outside 5 %
    _, vis, _ = build_tracks(depth, np.stack([K_()] * 2), np.stack([pose(), pose()]), grid=4)
    assert not vis[1].any()


@pytest.mark.parametrize("bad, match", [
    ("nan", "non-finite"), ("singular_K", "singular intrinsic"), ("scaled_R", "not a proper rotation"),
])
def test_bad_cameras_are_named(bad, match):
    K = np.stack([K_()] * 3)
    T = np.stack([pose()] * 3)
    if bad == "nan":
        T[2, 0, 3] = np.nan
    elif bad == "singular_K":
        K[1, 0, 0] = 0.0
    else:
        T[2, :3, :3] *= 2
    with pytest.raises(CameraError, match=match):
        check_cameras(K, T)
    with pytest.raises(CameraError, match="frame"):
        build_tracks(plane_depth(2.0, 3), K, T, grid=4)
