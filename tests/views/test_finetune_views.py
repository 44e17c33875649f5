import torch

from rspretrain.views.finetune_views import AugmentConfig, SceneClassificationViews


def test_test_view_standardises_and_train_view_augments():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    views = SceneClassificationViews(32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    test = views.test_view(images)
    expected = (images.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2
    assert torch.allclose(test, expected, atol=1e-5)
    torch.manual_seed(0)
    train = views.train_view(images)
    assert train.shape == test.shape and not torch.allclose(train, test)


def test_whole_image_crop_without_flips_is_the_test_view():
    images = torch.randint(0, 256, (2, 4, 16, 16), dtype=torch.uint8)
    cfg = AugmentConfig(crop_scale_min=1.0, crop_scale_max=1.0, hflip_p=0.0, vflip_p=0.0)
    views = SceneClassificationViews(16, mean=[0.5] * 4, std=[0.25] * 4, config=cfg)
    assert torch.allclose(views.train_view(images), views.test_view(images), atol=1e-5)


def test_vertical_flip_always_on_flips_rows():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    cfg = AugmentConfig(crop_scale_min=1.0, crop_scale_max=1.0, hflip_p=0.0, vflip_p=1.0)
    views = SceneClassificationViews(16, mean=[0.5] * 3, std=[0.25] * 3, config=cfg)
    assert torch.allclose(views.train_view(images), views.test_view(images).flip(-2), atol=1e-5)
