from .gradients import gradient_snr, snr_table

__all__ = ["gradient_snr", "snr_table"]
