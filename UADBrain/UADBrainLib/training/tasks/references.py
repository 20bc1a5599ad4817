"""The papers the trained families implement, cited in their model cards."""

KASCENAS_2022 = ("Kascenas A, Pugeault N, O'Neil AQ. Denoising autoencoders for unsupervised anomaly "
                 "detection in brain MRI. MIDL 2022, PMLR 172:653-664.")
BEHRENDT_2024 = ("Behrendt F, Bhattacharya D, Maack L, Krüger J, Opfer R, Mieling R, Schlaefer A. "
                 "Diffusion models with ensembled structure-based anomaly scoring for unsupervised "
                 "anomaly detection. ISBI 2024.")
BAUGH_2023 = ("Baugh M, Tan J, Müller JP, Dombrowski M, Batten J, Kainz B. Many tasks make light work: "
              "learning to localise medical anomalies from multiple synthetic tasks. MICCAI 2023.")
BAUR_2021 = ("Baur C, Denner S, Wiestler B, Navab N, Albarqouni S. Autoencoders for unsupervised anomaly "
             "segmentation in brain MR images: a comparative study. Medical Image Analysis 69, 2021.")
BAUR_2020 = ("Baur C, Wiestler B, Albarqouni S, Navab N. Bayesian skip-autoencoders for unsupervised "
             "hyperintense anomaly segmentation of structural brain MRI. ISBI 2020.")
ZIMMERER_2019 = ("Zimmerer D, Isensee F, Petersen J, Kohl S, Maier-Hein K. Unsupervised anomaly localization "
                 "using variational auto-encoders. MICCAI 2019 (and: Context-encoding variational autoencoder "
                 "for unsupervised anomaly detection, MIDL 2019).")
BEHRENDT_2023 = ("Behrendt F, Bhattacharya D, Krüger J, Opfer R, Schlaefer A. Patched diffusion models for "
                 "unsupervised anomaly detection in brain MRI. MIDL 2023, PMLR 227:1019-1032.")
BEHRENDT_2025 = ("Behrendt F, Bhattacharya D, Mieling R, Maack L, Krüger J, Opfer R, Schlaefer A. Guided "
                 "reconstruction with conditioned diffusion models for unsupervised anomaly detection in brain "
                 "MRIs. Computers in Biology and Medicine 186, 2025.")
SCHLEGL_2019 = ("Schlegl T, Seeböck P, Waldstein SM, Langs G, Schmidt-Erfurth U. f-AnoGAN: fast unsupervised "
                "anomaly detection with generative adversarial networks. Medical Image Analysis 54:30-44, 2019.")
GULRAJANI_2017 = ("Gulrajani I, Ahmed F, Arjovsky M, Dumoulin V, Courville A. Improved training of Wasserstein "
                  "GANs. NeurIPS 2017.")
KINGMA_2014 = "Kingma DP, Welling M. Auto-encoding variational Bayes. ICLR 2014."
WYATT_2022 = ("Wyatt J, Leach A, Schmon SM, Willcocks CG. AnoDDPM: anomaly detection with denoising diffusion "
              "probabilistic models using simplex noise. CVPR Workshops 2022.")
SONG_2021 = "Song J, Meng C, Ermon S. Denoising diffusion implicit models. ICLR 2021."
SYNTHSEG = ("Billot B, Greve DN, Puonti O, et al. SynthSeg: segmentation of brain MRI scans of any "
            "contrast and resolution without retraining. Medical Image Analysis 86, 2023 (label maps).")
LESJAK_2018 = ("Lesjak Ž, Galimzianova A, Koren A, et al. A novel public MR image dataset of multiple "
               "sclerosis patients with lesion segmentations based on multi-rater consensus. "
               "Neuroinformatics 16:51-63, 2018 (lesion shapes).")
SAASE_2020 = ("Saase V, Wenz H, Ganslandt T, Groden C, Maros ME. Simple statistical methods for unsupervised "
              "brain anomaly detection on MRI are competitive to deep learning methods. arXiv:2011.12735, 2020.")
BENGS_2022 = ("Bengs M, Behrendt F, Laves MH, Krüger J, Opfer R, Schlaefer A. Unsupervised anomaly detection in "
              "3D brain MRI using deep learning with multi-task brain age prediction. Proc. SPIE 12033, Medical "
              "Imaging 2022: Computer-Aided Diagnosis, 2022.")
FONOV_2011 = ("Fonov VS, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average "
              "age-appropriate atlases for pediatric studies. NeuroImage 54:313-327, 2011 (ICBM152 template).")
ROTH_2022 = ("Roth K, Pemula L, Zepeda J, Schölkopf B, Brox T, Gehler P. Towards total recall in industrial "
             "anomaly detection. CVPR 2022 (PatchCore).")
DEFARD_2021 = ("Defard T, Setkov A, Loesch A, Audigier R. PaDiM: a patch distribution modeling framework for "
               "anomaly detection and localization. ICPR Workshops 2021.")
WANG_2021 = ("Wang G, Han S, Ding E, Huang D. Student-teacher feature pyramid matching for anomaly detection. "
             "BMVC 2021 (STFPM).")
BEHRENDT_2024A = ("Behrendt F, Bhattacharya D, Maack L, Krüger J, Opfer R, Schlaefer A. Combining reconstruction-"
                  "based unsupervised anomaly detection with supervised segmentation for brain MRIs. MIDL 2024, "
                  "PMLR 250.")
