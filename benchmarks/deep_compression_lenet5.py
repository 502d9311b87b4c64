"""Deep Compression on LeNet-5 / Fashion-MNIST: >= 39x at <= 0.5 points drop."""

from common import trained_lenet5
from deep_compression_common import run

import modelzip as mz

if __name__ == "__main__":
    run("deep_compression_lenet5", "Deep Compression: LeNet-5 on Fashion-MNIST",
        trained_lenet5, mz.zoo.lenet5,
        sparsity={"0": 0.34, "3": 0.88, "7": 0.93, "9": 0.81},  # ~ the paper's per-layer choice
        anchors=["Deep Compression (Han, Mao & Dally, ICLR 2016), LeNet-5 on MNIST: "
                 "1720 KB -> 44 KB, 39x (pruning 12x, + quantization 33x, + Huffman 39x), "
                 "error 0.80% -> 0.74%"],
        paper={"prune": 12, "cluster": 33, "huffman": 39, "target": 39}, epochs=1.0, steps=4,
        recover_epochs=2.0, cluster_epochs=1.0, conv_bits=6, fc_bits=4)
