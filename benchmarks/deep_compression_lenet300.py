"""Deep Compression on LeNet-300-100 / Fashion-MNIST: >= 40x at <= 0.5 points drop."""

from common import trained_lenet300
from deep_compression_common import run

import modelzip as mz

if __name__ == "__main__":
    run("deep_compression_lenet300", "Deep Compression: LeNet-300-100 on Fashion-MNIST",
        trained_lenet300, mz.zoo.lenet300,
        sparsity=0.92,  # global ranking (beat the per-layer 0.92/0.91/0.74 here)
        anchors=["Deep Compression (Han, Mao & Dally, ICLR 2016), LeNet-300-100 on MNIST: "
                 "1070 KB -> 27 KB, 40x (pruning 12x, + quantization 32x, + Huffman 40x), "
                 "error 1.64% -> 1.58%"],
        paper={"prune": 12, "cluster": 32, "huffman": 40, "target": 40}, epochs=3.0, steps=6,
        recover_epochs=4.0, cluster_epochs=3.0, fc_bits=4,
        distill={"temperature": 4.0, "alpha": 0.5})  # 16 clusters; plain fine-tuning overfits
