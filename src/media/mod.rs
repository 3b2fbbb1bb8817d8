//! Media sources and encoders behind small traits (camera, microphone, encoder), with synthetic
//! implementations that run the whole device on a laptop.
