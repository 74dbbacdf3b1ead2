"""The synthetic grocery world behind `genrec data synth` and `genrec demo`: a hand-written 3-level
taxonomy, branded products, retailers with their own assortments, shoppers with latent tastes, and orders
with planted staples, complements and late launches (recorded in the dataset's meta)."""
from genrec.data.synth.config import SynthConfig
from genrec.data.synth.world import synthesize

__all__ = ["SynthConfig", "synthesize"]
