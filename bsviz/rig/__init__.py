"""The mesh side: the rig as arrays, the blendshape equation (numpy, torch), rendering and exports."""
