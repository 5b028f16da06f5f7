"""Any image model of the optional package timm, trained from scratch."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lenscnn.errors import UserError
from lenscnn.models.layers import as_image_size, coord_input

MISSING_TIMM = "model=timm needs the optional package timm: pip install timm (it requires torchvision)"


class TimmBackbone(nn.Module):
    """A timm model (``timm.create_model(model_name, ...)``) with ``num_outputs`` linear outputs.

    The model is created with random weights (``pretrained=False``: lenscnn never downloads
    weights), ``in_chans = in_channels`` (+2 with coordinate channels) and
    ``num_classes = num_outputs``, so its own classifier becomes the linear output layer.
    ``dropout > 0`` is passed as timm's ``drop_rate`` (dropout before that layer); other timm
    options, e.g. ``img_size`` for vision transformers, go in ``timm_kwargs``. timm heads
    usually pool globally, so the coordinate channels (``coord_channels=True``, the default) are
    what lets such a model locate the lens. The timm model is ``model_name`` (``name`` is the
    backbone family, ``timm``, in :data:`lenscnn.models.BACKBONES` specs).
    """

    def __init__(
        self,
        num_outputs: int,
        image_size: tuple[int, int] | int,
        in_channels: int = 1,
        dropout: float = 0.0,
        *,
        model_name: str,
        pretrained: bool = False,
        coord_channels: bool = True,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        as_image_size(image_size)
        if pretrained:
            raise UserError(
                "model=timm trains from scratch: pretrained weights are never downloaded; set pretrained=false"
            )
        try:
            import timm
        except ImportError as err:
            raise UserError(MISSING_TIMM) from err
        self.coords, channels = coord_input(in_channels, coord_channels)
        if dropout > 0:
            timm_kwargs["drop_rate"] = dropout
        self.net = timm.create_model(
            model_name, pretrained=False, in_chans=channels, num_classes=num_outputs, **timm_kwargs
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` images to ``(B, num_outputs)`` outputs."""
        return self.net(self.coords(x))
