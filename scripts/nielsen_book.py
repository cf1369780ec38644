"""The book's chapter 1 run, written the book's way; only the two imports name fastbp.

    python scripts/nielsen_book.py [DATA]

DATA: the book's mnist.pkl.gz or a folder of MNIST IDX files. Without it, the loader looks in
$FASTBP_MNIST, the book's ../data/mnist.pkl.gz, $FASTBP_DATA and ~/.cache/fastbp/mnist, and then
uses Fashion-MNIST (~/.cache/fastbp/fashion-mnist or Debian's /usr/share/datasets/fashion-mnist)
as a stand-in, saying so on stderr. See fastbp/compat/mnist_loader.py.
"""
import os
import sys

import fastbp.compat.mnist_loader as mnist_loader
import fastbp.compat.nielsen as network

if len(sys.argv) > 1:  # the one addition to the book's script: an optional data path
    os.environ["FASTBP_MNIST"] = sys.argv[1]

training_data, validation_data, test_data = mnist_loader.load_data_wrapper()
net = network.Network([784, 30, 10])
net.SGD(training_data, 30, 10, 3.0, test_data=test_data)
