"""The module's help and acknowledgement, as Slicer shows them."""

HELP_TEXT = """
<p>Finds what looks abnormal in brain MRI without having been shown any lesion: a <b>normative
model</b> learned what healthy brains look like, and every voxel it cannot explain is flagged.
The result is an <b>anomaly map</b> (colour overlay), a <b>segmentation</b> of the flagged regions
and a <b>lesion table</b> (volume, maximum score, centroid; click a row to go there).</p>
<p><b>How to use:</b> select one or more co-registered volumes of one patient (FLAIR, T1, T2, T1c;
any subset the model supports), optionally a brain mask, press <b>Apply</b>. The default model
scores FLAIR alone when it is selected (adding other contrasts measured worse) and says so; without
FLAIR it flags what all selected contrasts agree on. Tune the threshold, the healthy
false-positive rate, the median filter, the minimum lesion size and the brain-mask erosion
afterwards: the segmentation updates live, without rerunning the model. <b>Calibrated</b> sets the
threshold at which a chosen share of healthy brain voxels would be flagged (by default the model's
own operating point; models with a healthy calibration); <b>Otsu</b> picks it from this brain's own scores.
Export writes the segmentation (.seg.nrrd and NIfTI), the anomaly map (NIfTI) and the lesion table
(CSV); DICOM SEG through Slicer's DICOM export.</p>
<p><b>What it does not do:</b> it is <b>not a diagnostic device</b> and is not approved for clinical
use. It flags <i>unusual</i> tissue, not disease: artefacts, unusual anatomy, registration errors and
normal variants can be flagged, and lesions that look like healthy tissue to the model are missed.
It does not classify lesions. Every finding needs review by a qualified reader.</p>
"""

ACKNOWLEDGEMENT_TEXT = """
<p>The bundled models are trained only on <b>synthetic healthy brains</b> generated from anatomical
label maps of the SynthSeg training set (Billot et al., Medical Image Analysis 86:102789, 2023;
label maps Apache-2.0); no patient images were used for training.</p>
<p>Methods: Baur C, Denner S, Wiestler B, Navab N, Albarqouni S. Autoencoders for unsupervised anomaly
segmentation in brain MR images: a comparative study. Medical Image Analysis 69:101952, 2021.
Lagogiannis I, Meissen F, Kaissis G, Rueckert D. Unsupervised pathology detection: a deep dive into
the state of the art. IEEE Transactions on Medical Imaging 43(1):241-252, 2024.
Meissen F, Kaissis G, Rueckert D. Challenging current semi-supervised anomaly segmentation methods
for brain MRI. BrainLes 2021, LNCS 12962, 2022 (thresholding baseline).
Kascenas A, Pugeault N, O'Neil AQ. Denoising autoencoders for unsupervised anomaly detection in brain
MRI. MIDL 2022, PMLR 172:653-664.
Behrendt F et al. Diffusion models with ensembled structure-based anomaly scoring for unsupervised
anomaly detection. ISBI 2024 (structural-dissimilarity scoring).</p>
"""
