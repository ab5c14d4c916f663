"""StreamMixDataset (mosaicml-streaming + torch) and the weight channel to DataLoader workers."""
