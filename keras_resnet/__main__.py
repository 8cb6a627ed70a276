"""`python -m keras_resnet summary resnet18 --block bottleneck --input-shape 214 214 3`"""

from keras_resnet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
