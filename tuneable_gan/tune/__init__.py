"""The Ray Tune adapter: the only package of tuneable_gan that imports ray."""
