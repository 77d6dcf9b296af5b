"""Custom autograd functions for layers whose backward pass uses a feedback matrix.

For a Linear or ConvNd layer with weight ``W`` the forward pass is the ordinary one. In the
backward pass the error sent to the layer's input is computed with a feedback matrix ``B`` of
``W``'s shape instead of ``W`` itself (times a scalar ``scale``); the weight and bias gradients
are the ordinary ones, ``dL/dW = δ xᵀ``. If ``B`` requires grad (Kolen-Pollack, PFA's helper)
it receives the same gradient as ``W``. Nothing is computed twice: one matmul (or one
``convolution_backward`` call) gives both the input and the weight gradient. At the end of its
backward a node releases the feedback buffer it used if the caller lent it one
(``node.bbp_scratch``, see ``common._Scratch``), so the buffer can be rewritten in place.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from .base import rule_attr

#: Attribute on an autograd node naming the reusable feedback buffer it borrowed.
SCRATCH_ATTR = rule_attr("scratch")


def _release(ctx) -> None:
    """Tell a reusable feedback buffer (``common._Scratch``) that this node is done with it."""
    scratch = getattr(ctx, SCRATCH_ATTR, None)
    if scratch is not None:
        scratch.release(ctx)


class FeedbackLinear(Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor, scale: float):
        ctx.save_for_backward(x, feedback)
        ctx.scale = scale
        ctx.has_bias = bias is not None
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, feedback = ctx.saved_tensors
        need_x, need_w, need_b, need_fb, _ = ctx.needs_input_grad
        grad_x = grad_w = grad_b = grad_fb = None
        if need_x:
            grad_x = grad_out.matmul(feedback.to(grad_out.dtype))
            if ctx.scale != 1.0:
                grad_x = grad_x.mul_(ctx.scale)
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        if need_w or need_fb:
            gw = g2.t().matmul(x.reshape(-1, x.shape[-1]))
            grad_w = gw if need_w else None
            grad_fb = gw if need_fb else None
        if need_b and ctx.has_bias:
            grad_b = g2.sum(0)
        _release(ctx)
        return grad_x, grad_w, grad_b, grad_fb, None


class FeedbackConv(Function):
    """ConvNd (N = 1, 2, 3) with zero padding given as ints; other padding is applied outside."""

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        feedback: Tensor,
        scale: float,
        stride: list[int],
        padding: list[int],
        dilation: list[int],
        groups: int,
    ):
        ctx.save_for_backward(x, feedback)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.scale = scale
        ctx.bias_sizes = [bias.shape[0]] if bias is not None else None
        out_pad = [0] * (weight.dim() - 2)
        return torch.convolution(x, weight, bias, stride, padding, dilation, False, out_pad, groups)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, feedback = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_x, need_w, need_b, need_fb = ctx.needs_input_grad[:4]
        out_pad = [0] * (feedback.dim() - 2)
        mask = [need_x, need_w or need_fb, need_b and ctx.bias_sizes is not None]
        grad_x, gw, grad_b = torch.ops.aten.convolution_backward(
            grad_out, x, feedback.to(grad_out.dtype), ctx.bias_sizes, stride, padding, dilation,
            False, out_pad, groups, mask,
        )
        if grad_x is not None and ctx.scale != 1.0:
            grad_x = grad_x.mul_(ctx.scale)
        grad_w = gw if need_w else None
        grad_fb = gw if need_fb else None
        _release(ctx)
        return grad_x, grad_w, grad_b, grad_fb, None, None, None, None, None
