"""The neural networks: towers, the residual quantizer, the SID decoder and the DGI model with its losses."""
