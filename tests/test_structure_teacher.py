"""PseudoGD's structure targets (gasp/objectives/structure_teacher.py): the surface stand-in re-renders the
renderer's own surfaces, tokens pool pixels like the depth targets do, and a teacher folder is checked."""
import numpy as np
import pytest
import torch

from gasp.objectives import structure_teacher as st
from tracks.synthetic import SyntheticSceneConfig, render_scene, render_views, sample_layout


@pytest.fixture(scope="module")
def scene():
    return render_scene(5, SyntheticSceneConfig(height=48, width=64, num_frames=3))


def test_surfaces_are_the_renderers_own(scene):
    ids = st.surface_ids(scene.metadata, scene.K, scene.cam_from_world, 48, 64)            # (F, H, W)
    rendered = np.stack([(ids == st.ROOM_SURFACES + m).any() for m in range(scene.metadata["num_objects"])])
    # the renderer's ids: 0 for the room, m + 1 for box m; ours: the room's face, 6 + m for box m
    layout = sample_layout(np.random.default_rng(5), SyntheticSceneConfig(height=48, width=64, num_frames=3))
    _, _, want = render_views(layout, scene.K[0], scene.cam_from_world, 48, 64)
    np.testing.assert_array_equal(np.where(ids >= st.ROOM_SURFACES, ids - st.ROOM_SURFACES + 1, 0), want)
    assert len(np.unique(ids[ids < st.ROOM_SURFACES])) >= 2 and rendered.any()            # faces and boxes both seen
    vis = scene.metadata["objects"][0]["visible_pixels"]
    assert [(ids[f] == st.ROOM_SURFACES).sum() for f in range(3)] == vis                   # the metadata's own count


def test_pool_tokens_is_the_mean_over_each_tokens_pixels():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 7, 10, 3)).astype(np.float32)                               # H, W not divisible
    got = st.pool_tokens(maps, (3, 4)).numpy()
    for f in range(2):
        for r in range(3):
            for c in range(4):
                rows = [i for i in range(7) if int((i + 0.5) * 3 / 7) == r]
                cols = [j for j in range(10) if int((j + 0.5) * 4 / 10) == c]
                np.testing.assert_allclose(got[f, r * 4 + c], maps[f][np.ix_(rows, cols)].reshape(-1, 3).mean(0),
                                           atol=1e-6)


def test_standin_targets_agree_within_a_surface(scene):
    t = st.standin_targets(scene.metadata, scene.K, scene.cam_from_world, (48, 64), (6, 8))  # (F, 48, 256)
    ids = st.surface_ids(scene.metadata, scene.K, scene.cam_from_world, 48, 64)
    codes = st.surface_codes(int(ids.max()) + 1)
    assert t.shape == (3, 48, st.CODE_DIM) and np.allclose(np.linalg.norm(codes, axis=1), 1)
    assert np.allclose(st.surface_codes(3)[2], codes[2])                                   # fixed per id
    box = ids[0].reshape(6, 8, 8, 8).transpose(0, 2, 1, 3).reshape(48, 64)                 # (tokens, pixels)
    one = [k for k in range(48) if len(np.unique(box[k])) == 1]
    assert one and all(torch.allclose(t[0, k], torch.from_numpy(codes[box[k][0]]), atol=1e-6) for k in one)


def test_other_data_is_refused_with_the_alternative():
    with pytest.raises(st.StructureTeacherError, match="teacher folder of .npy"):
        st.surface_ids({"generator": "colmap"}, np.eye(3), np.eye(4)[None], 8, 8)


def test_a_teacher_folder_is_checked_and_pooled(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "s0").mkdir()
    maps = rng.normal(size=(2, 12, 16, 5)).astype(np.float32)
    for f, m in zip((3, 9), maps):
        np.save(tmp_path / "s0" / f"{f:06d}.npy", m)
    teacher = st.NpyTeacher(tmp_path)
    torch.testing.assert_close(teacher.targets("s0", np.array([3, 9]), (3, 4)), st.pool_tokens(maps, (3, 4)))
    with pytest.raises(st.StructureTeacherError, match=r"lacks feature maps for frames \[4\]"):
        teacher.check("s0", np.array([3, 4]))
    with pytest.raises(st.StructureTeacherError, match="does not exist"):
        st.NpyTeacher(tmp_path / "nowhere")
