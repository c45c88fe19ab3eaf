"""Shared fixtures: a tiny random U-Net with a self-attention mid-block, saved like a download, and loaded."""

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from labkit.models import load_model

# 8×8×1 latents, three levels (8, 16, 16 channels), mid-block attention at 2×2: the embedded
# model's architecture in miniature, so every test runs in milliseconds.
TINY_UNET = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), layers_per_block=1,
                 down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=4,
                 attention_head_dim=8)


def linear_schedule() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny") / "pipeline"
    DDPMPipeline(unet=UNet2DModel(**TINY_UNET), scheduler=linear_schedule()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    """The tiny U-Net as a float32 `DiffusionModel`, loaded the way a user loads a downloaded model."""
    return load_model(tiny_dir)


@pytest.fixture(scope="session")
def tiny64(tiny_dir):
    """The same model in float64, for derivative checks to 1e-10."""
    return load_model(tiny_dir, dtype=torch.float64)
