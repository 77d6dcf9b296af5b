from .gradients import gradient_snr, snr_table
