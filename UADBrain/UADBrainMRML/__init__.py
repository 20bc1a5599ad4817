"""UADBrain's module Logic on MRML nodes (no Qt): used by the Slicer panel and the web app.

>>> from UADBrainMRML.logic import UADBrainMRMLLogic
>>> outputs = UADBrainMRMLLogic(scene).process({"flair": volumeNode})
"""
