"""Model: U-Net frame transformer (see SPEC section 4).

from trainer.model import ModelConfig, load_model_preset, build_model
model = build_model(load_model_preset("tiny"))
head, nsp_logit = model(spec)          # spec [B, 2, bins, T]; trainer.objective.reconstruct(head, ...)
"""

from trainer.model.config import ModelConfig, load_model_preset, preset_names
from trainer.model.unet import FrameTransformerUNet, build_model

__all__ = ["ModelConfig", "load_model_preset", "preset_names", "build_model", "FrameTransformerUNet"]
