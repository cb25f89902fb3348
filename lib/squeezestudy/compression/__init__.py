"""Making the trained models small: int8 quantisation (int8, with its results recorded per machine in
measured), Deep Compression (pruning, weight sharing, Huffman coding: deep_compression, huffman) and
Table 2's grid of settings (grid)."""
